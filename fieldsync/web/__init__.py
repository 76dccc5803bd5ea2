"""The monitor's web app, served by the node daemon (``[web]`` in the configuration).

Pages to write a report, follow one's reports and see the node's state, in the monitor's
language. Built on the node API (``fieldsync.node``) that the CLI uses: this package never
validates, signs or stores a report itself. Only the daemon (the composition root) imports it.

The package's ``__init__`` imports nothing, so the CLI can read the certificate
(``fieldsync.web.tls``) without loading the app.
"""
