"""The workbench around the library: command line, headless pipeline, run folders, argument checks, notebook
widgets and shared notebook cells. It imports ``roberta_diffusion`` (the science); the library never imports it."""
