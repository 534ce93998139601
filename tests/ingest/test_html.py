"""HTML: the main text of a page, structured by its headings, without the chrome."""

from __future__ import annotations

import pytest

from shardrag.errors import BinaryContent, EmptyDocument
from shardrag.ingest import parse
from shardrag.models import ParsedDocument


def html(source: str) -> ParsedDocument:
    return parse(source.encode(), "page.html")


def texts(doc: ParsedDocument) -> list[str]:
    return [b.text for b in doc.blocks]


PAGE = """<!doctype html>
<html><head><title>Shardrag &mdash; Guide</title>
<style>p { color: red }</style><script>var tracking = "script text";</script></head>
<body>
<header><a href="/">Site banner</a></header>
<nav><ul><li>Home</li><li>Docs</li></ul></nav>
<aside>Related links</aside>
<div class="content">
  <h1>Guide</h1>
  <p>Welcome to the <b>guide</b>.</p>
  <noscript>Enable JavaScript</noscript>
  <form><label>Search</label><input></form>
  <h2>Install</h2>
  <p>Run the installer.</p>
  <iframe src="ad.html">ad text</iframe>
  <template><p>template text</p></template>
  <svg><text>svg text</text></svg>
</div>
<footer>Copyright footer</footer>
</body></html>"""


def test_page_chrome_scripts_and_styles_are_dropped() -> None:
    doc = html(PAGE)

    assert texts(doc) == ["Welcome to the guide.", "Run the installer."]
    assert not any(
        noise in doc.text
        for noise in ("banner", "Home", "Related", "script text", "color", "footer", "Search")
    )


def test_headings_give_the_path_and_a_new_h2_closes_deeper_levels() -> None:
    doc = html(
        "<body><h1>A</h1><p>a</p><h2>B</h2><h3>C</h3><p>c</p><h2>D</h2><p>d</p>"
        "<h4>E</h4><p>e</p></body>"
    )

    assert [(b.text, b.headings) for b in doc.blocks] == [
        ("a", ("A",)),
        ("c", ("A", "B", "C")),
        ("d", ("A", "D")),
        ("e", ("A", "D", "E")),
    ]


def test_title_comes_from_title_element_else_first_h1() -> None:
    assert html(PAGE).title == "Shardrag — Guide"
    assert html("<body><p>x</p><h1>First <i>heading</i></h1><h1>Second</h1></body>").title == (
        "First heading"
    )


def test_main_element_is_preferred_over_the_rest_of_the_body() -> None:
    doc = html("<body><div><p>outside</p></div><main><p>inside main</p></main></body>")

    assert texts(doc) == ["inside main"]


def test_largest_article_is_used_when_there_is_no_main() -> None:
    doc = html(
        "<body><article><p>teaser</p></article>"
        "<article><p>the long article body text</p></article><p>outside</p></body>"
    )

    assert texts(doc) == ["the long article body text"]


def test_article_header_keeps_the_article_heading() -> None:
    doc = html(
        "<body><header><h1>Site</h1></header><article><header><h1>Post</h1></header>"
        "<p>text</p></article></body>"
    )

    assert [(b.text, b.headings) for b in doc.blocks] == [("text", ("Post",))]


def test_entities_are_decoded_and_whitespace_collapsed() -> None:
    doc = html("<p>  Fish&nbsp;&amp;\n\n   chips &lt;3 &#x2713;  </p>")

    assert texts(doc) == ["Fish & chips <3 ✓"]


def test_lists_tables_definitions_quotes_and_bare_div_text_are_blocks() -> None:
    doc = html(
        "<body><div>bare <em>inline</em> text<p>para</p>tail text</div>"
        "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>"
        "<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>"
        "<dl><dt>term</dt><dd>definition</dd></dl>"
        "<blockquote>quoted</blockquote></body>"
    )

    assert texts(doc) == [
        "bare inline text",
        "para",
        "tail text",
        "one",
        "nested",
        "two",
        "k | v",
        "a | 1",
        "term",
        "definition",
        "quoted",
    ]


def test_pre_is_kept_verbatim() -> None:
    doc = html("<pre>def f():\n    return  1\n</pre>")

    assert texts(doc) == ["def f():\n    return  1"]


def test_comments_are_not_text() -> None:
    assert texts(html("<p>visible<!-- hidden comment --></p>")) == ["visible"]


@pytest.mark.parametrize(
    "source",
    [
        "<p>unclosed <b>bold <i>italic",
        "<html><body><p>a</div></span>b</td></table>",
        "<<<p>>>text<//p>",
        "<div>" * 3000 + "deep",
        "<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'><p>x</p></html>",
    ],
    ids=["unclosed", "stray-closers", "angle-soup", "deep-nesting", "xhtml"],
)
def test_malformed_html_does_not_crash(source: str) -> None:
    assert html(source).text.strip()


@pytest.mark.parametrize(
    "source",
    [
        "<html><head><title>Only a title</title></head><body></body></html>",
        "<body><nav>menu</nav><script>x()</script><!-- c --></body>",
    ],
)
def test_html_without_text_is_empty(source: str) -> None:
    with pytest.raises(EmptyDocument):
        html(source)


def test_html_is_decoded_like_text() -> None:
    doc = parse(b"<p>caf\xe9</p>", "a.htm")

    assert (doc.content_type, doc.encoding, texts(doc)) == ("text/html", "cp1252", ["café"])
    with pytest.raises(BinaryContent):
        parse(b"<p>\x00\x01</p>", "a.html")
