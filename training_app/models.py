"""Models of this stage arrive with their issue; every row will belong to a Domain."""
