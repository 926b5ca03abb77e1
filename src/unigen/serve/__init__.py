"""`unigen serve`: a local web page that streams generations step by step (app.py: routes and the server; runs.py:
which runs may be loaded; streams.py: jobs, workers, cancellation; frames.py: what each step looks like on the page;
static/: the page itself, every asset local). A consumer like `cli`: it imports run, registry, data and the
families' `Task.sample`, and nothing imports it but `cli`."""
