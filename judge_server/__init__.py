"""The rubric-scoring judge service.

Importing this package must not import jax: a judge with a remote backend runs
on machines without it. Only `judge_server.backends.jax_local` touches jax.
"""
