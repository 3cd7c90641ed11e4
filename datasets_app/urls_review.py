"""Browser URLs of the review queue and single pairs, under /d/<slug>/."""
urlpatterns: list = []
