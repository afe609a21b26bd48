"""`kqv serve`: a local web page to look inside models, and the JSON API behind it.

explorer.py   what can be asked of one model (tokens, attention, next token, generation, shapes)
schema.py     the API's requests and answers (checked by FastAPI, listed in /openapi.json)
app.py        the FastAPI app: routes, errors as {"error": "…"}, the page's files
server.py     listening sockets and uvicorn, in the foreground or on a thread
static/       the page: hand-written HTML, CSS and JavaScript, no library, no CDN
"""
