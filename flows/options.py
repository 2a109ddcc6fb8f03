"""The options every verb shares, declared once."""

from __future__ import annotations

import typer

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")
ProfileOpt = typer.Option(None, "--profile", help="test | demo | nightly (default: settings).")
DatasetOpt = typer.Option("ec3d", "--dataset", help="Dataset name, e.g. ec3d or uiprmd.")

# A source's conventions, declared (posecoach ingest, posecoach score): model.data.readers
# checks them (checked_declarations), model.data.conventions weighs them against the data.
LayoutOpt = typer.Option(None, "--layout", help="Input layout, when not told by the file.")
LayoutFileOpt = typer.Option(None, "--layout-file", help="A JSON layout (joints, bones, map "
                             "onto the canonical 19, up) for a source without a built-in one.")
UnitsOpt = typer.Option(None, "--units", help="Units m, cm or mm, over what the files declare "
                        "and the data says.")
UpOpt = typer.Option(None, "--up", help="Up axis (+x, -x, +y, -y, +z, -z), over what the files "
                     "declare and the data says.")
MirroredOpt = typer.Option(None, "--mirrored/--not-mirrored",
                           help="Left-handed coordinates or not, over the data's word.")
FpsOpt = typer.Option(None, "--fps", help="Frame rate, over what the files declare and their "
                      "timestamps say.")
ZerosLostOpt = typer.Option(None, "--zeros-lost/--no-zeros-lost",
                            help="Exact (0, 0, 0) joints are lost joints (OpenPose's convention), "
                            "or real points; over what the layout and posecoach.json say.")
