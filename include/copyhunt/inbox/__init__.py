"""The customer inbox: ``copyhunt serve`` (FastAPI, server-rendered Jinja2, no front-end build).

Customers sign in with a token from ``copyhunt customers token CUSTOMER_ID``, see their hits sorted
by value or date and filtered by status, domain, score and first-seen date, open a hit to compare
their image with the found one (matched region outlined), and mark it "licensed", "not mine" or
"claim". ``GET /api/hits`` serves the same data as JSON to a Bearer token (OpenAPI at
``/api/openapi.json``). ``create_app`` in ``copyhunt.inbox.app`` builds the application.
"""
