"""The ``portico`` sub-command apps that build a Runtime or call the server (tools, sql, eval, pipeline): the outer
layer, so the folders the Runtime is built from never import it back."""
