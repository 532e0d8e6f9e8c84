"""`dealscout review`: a local web app to look over, edit, approve and export the listings.

    app.py        the ASGI app: routes, pages, actions (raw ASGI on uvicorn, no framework)
    http.py       request, response, and the guards (token, Host, CSRF, cross-site POSTs)
    forms.py      the item page's form to and from a listing, checked like a model's answer
    thumbs.py     photos served as cached thumbnails made from the item's own files
    templates/    Jinja2 pages (autoescaped: every model text and file name is untrusted)
    static/       the page's own script and style; nothing is fetched from elsewhere

The store does the work (`store/reviews.py`): revisions, decisions, ask again, the grid;
the Groups page merges and splits through `store/groups.py`, as `dealscout group` does.
Nothing here imports google-genai: the app starts fast.
"""

from dealscout_cli.review.server import serve

__all__ = ["serve"]
