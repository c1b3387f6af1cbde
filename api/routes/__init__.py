"""HTTP routes, one module per resource; each handler parses, authorizes, calls a service, answers.

Each router carries its full prefix (`/v1/jobs`), so a route's template is its whole path (metrics labels).
"""

V1 = "/v1"
