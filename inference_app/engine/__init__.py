"""Pure-Python pipeline code for this stage; never imports Django (see DESIGN.md)."""
