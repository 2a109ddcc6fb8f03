"""The `posecoach` command line: every verb, registered here.

Each verb's options and printing live in a flows/cmd_*.py module; the work it runs lives in the
flow module of the same name (flows/ingest.py, retrain.py, score.py, synth.py, demo.py, paper.py,
serve.py, models.py).
"""

from __future__ import annotations

import typer

from flows import (
    cmd_data,
    cmd_demo,
    cmd_ingest,
    cmd_models,
    cmd_paper,
    cmd_retrain,
    cmd_review,
    cmd_score,
    cmd_serve,
    cmd_server,
    cmd_synth,
)

app = typer.Typer(
    name="posecoach",
    help="Exercise feedback from 3D pose: ingest, retrain, score, promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(ctx: typer.Context,
         verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="Show the libraries' output (Prefect, Ray, MLflow) "
                                           "on the terminal instead of only in the log.")) -> None:
    """Around every verb: what it starts ends with it (even when killed), a server left by
    `posecoach server start` is used, and the libraries' output goes to
    $POSECOACH_HOME/logs/<verb>-<time>.log unless --verbose."""
    from flows import console, lifetime, server
    from model.data.storage import delta_path_problem
    from model.settings import SettingsError, load_settings

    try:
        lake = load_settings().lake
        problem = delta_path_problem(lake)
        if problem is not None:
            raise SettingsError(f"the lake {lake} (POSECOACH_LAKE, else under POSECOACH_HOME) "
                                f"cannot hold Delta tables: {problem}")
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    verb = ctx.invoked_subcommand or "posecoach"
    if verb != "server":
        lifetime.tie_descendants()
        server.use_running_server()
    if not verbose:
        log = console.quiet(verb)
        if log is not None:
            ctx.call_on_close(console.restore)


app.command("ingest")(cmd_ingest.ingest)
app.command("retrain")(cmd_retrain.retrain)
app.command("score")(cmd_score.score)
app.command("synth")(cmd_synth.synth_command)
app.command("demo")(cmd_demo.demo)
app.command("paper-protocol")(cmd_paper.paper_protocol)
app.command("serve")(cmd_serve.serve)
app.command("drift")(cmd_review.drift)

data_app = typer.Typer(help="Dataset cards, versions, deletion and restore.",
                       no_args_is_help=True)
data_app.command("create")(cmd_data.create)
data_app.command("configure")(cmd_data.configure_card)
data_app.command("show")(cmd_data.show)
data_app.command("versions")(cmd_ingest.versions)
data_app.command("delete-subject")(cmd_ingest.delete_subject)
data_app.command("restore")(cmd_ingest.restore)
data_app.command("compact")(cmd_ingest.compact)
data_app.command("vacuum")(cmd_ingest.vacuum)
app.add_typer(data_app, name="data")

models_app = typer.Typer(help="Registered models: list, promote, roll back, import the paper's.",
                         no_args_is_help=True)
models_app.command("list")(cmd_models.list_models)
models_app.command("promote")(cmd_models.promote_model)
models_app.command("rollback")(cmd_models.rollback_model)
models_app.command("import-paper")(cmd_models.import_paper_model)
app.add_typer(models_app, name="models")
app.add_typer(cmd_server.server_app, name="server")

__all__ = ["app"]

if __name__ == "__main__":
    app()
