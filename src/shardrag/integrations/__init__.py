"""shardrag inside other frameworks: ``integrations.langchain`` (``pip install
'shardrag[langchain]'``). Each module imports its framework; this package imports none."""
