project = "forwardbasespawner"
author = "the forwardbasespawner developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "autodoc_traits"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
html_theme = "alabaster"
