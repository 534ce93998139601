"""HTML: the main text of a page as blocks under its h1–h6 headings, without the chrome."""

from __future__ import annotations

import warnings

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PageElement, Tag

from shardrag.ingest.decoding import decode_text
from shardrag.ingest.structure import BlockBuilder, collapse_whitespace
from shardrag.models import ParsedDocument

CONTENT_TYPE = "text/html"

# Uploaded markup that looks like a file name, or XHTML, is still what we were asked to parse.
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)

# Never text: code, styling, and the page chrome around the content.
DROPPED_TAGS = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "nav",
    "aside",
    "form",
    "iframe",
)
# Site banners and footers; the <header> of an <article> or <main> holds its title, so those stay.
PAGE_CHROME_TAGS = ("header", "footer")
CONTENT_ROOTS = ("main", "article")
HEADING_LEVELS = {f"h{n}": n for n in range(1, 7)}
# Elements that end the running text before them and start a new block; any other element
# (span, a, em, code, unknown tags) is inline and continues the text around it.
BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "body", "caption", "center", "dd", "details",
        "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer",
        "header", "hgroup", "hr", "html", "legend", "li", "main", "menu", "ol", "p",
        "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "ul",
    }
)  # fmt: skip
TABLE_CELLS = ("td", "th")
# Marks, on the walk's stack, the end of a block element's children.
_END_OF_BLOCK = object()


def parse_html(data: bytes) -> ParsedDocument:
    """Blocks of the page's main content: paragraphs, list items, table rows, ``pre`` ...

    The content root is the first ``<main>``, else the largest ``<article>``, else ``<body>``.
    The title is ``<title>``, else the first ``<h1>`` of the content.
    """
    decoded = decode_text(data)
    soup = BeautifulSoup(decoded.text, "lxml")
    title = _title(soup)
    _drop_non_content(soup)
    root = _content_root(soup)
    builder = BlockBuilder()
    _walk(root, builder)
    if title is None:
        first_h1 = root.find("h1")
        title = first_h1.get_text(" ") if first_h1 is not None else None
    return builder.document(
        content_type=CONTENT_TYPE,
        title=title,
        encoding=decoded.encoding,
        empty_message="the HTML document has no text outside markup",
    )


def add_fragment(markup: str, builder: BlockBuilder) -> None:
    """Add the blocks and headings of an HTML fragment (raw HTML inside Markdown)."""
    soup = BeautifulSoup(markup, "lxml")
    _drop_non_content(soup)
    _walk(soup, builder)


def _title(soup: BeautifulSoup) -> str | None:
    tag = soup.find("title")
    text = collapse_whitespace(tag.get_text(" ")) if tag is not None else ""
    return text or None


def _drop_non_content(soup: BeautifulSoup) -> None:
    for tag in soup.find_all(DROPPED_TAGS):
        # A tag nested in one already dropped went with it.
        if not tag.decomposed:
            tag.decompose()
    for tag in soup.find_all(PAGE_CHROME_TAGS):
        if not tag.decomposed and tag.find_parent(CONTENT_ROOTS) is None:
            tag.decompose()


def _content_root(soup: BeautifulSoup) -> Tag:
    main = soup.find("main")
    if main is not None:
        return main
    articles = soup.find_all("article")
    if articles:
        return max(articles, key=lambda article: len(article.get_text()))
    body = soup.find("body")
    return body if body is not None else soup


def _walk(root: Tag, builder: BlockBuilder) -> None:
    """Emit the blocks under ``root`` in document order.

    Iterative, with an explicit stack, because malformed pages can nest thousands deep.
    """
    run: list[str] = []

    def flush() -> None:
        builder.add("".join(run))
        run.clear()

    stack: list[PageElement | object] = list(reversed(root.contents))
    while stack:
        node = stack.pop()
        if node is _END_OF_BLOCK:
            flush()
        elif isinstance(node, NavigableString):
            # Comments, doctypes and CDATA are strings too, but not text.
            if type(node) is NavigableString:
                run.append(str(node))
        elif isinstance(node, Tag):
            if node.name in HEADING_LEVELS:
                flush()
                builder.heading(HEADING_LEVELS[node.name], node.get_text(" "))
            elif node.name == "pre":
                flush()
                builder.add(node.get_text(), verbatim=True)
            elif node.name == "tr":
                flush()
                cells = (cell.get_text(" ") for cell in node.find_all(TABLE_CELLS, recursive=False))
                builder.add(" | ".join(filter(None, map(collapse_whitespace, cells))))
            elif node.name == "br":
                run.append(" ")
            elif node.name in BLOCK_TAGS:
                flush()
                stack.append(_END_OF_BLOCK)
                stack.extend(reversed(node.contents))
            else:
                stack.extend(reversed(node.contents))
    flush()
