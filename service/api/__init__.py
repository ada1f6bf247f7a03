"""How a request is declared, validated and answered.

@endpoint, errors, schemas, headers, HTTP caching, the OpenAPI document.
"""
