"""The FireWorks launchpad of a campaign: where it lives, its first initialisation, and the worker files.

``dp-screen submit`` and ``dp-screen learn --submit`` put their workflows on the launchpad this module returns and
write the files a person (or SLURM) starts workers with.
"""

from __future__ import annotations

from pathlib import Path

from dp_screen.errors import InputError


def initialise_launchpad(lpad) -> None:
    """Initialise a launchpad that has never been used (FireWorks needs its id counters); never wipe a used one."""
    if lpad.fw_id_assigner.find_one() is not None:
        return
    if lpad.workflows.find_one() is not None or lpad.fireworks.find_one() is not None:
        raise InputError(
            f"launchpad {lpad.name!r} holds workflows but no id counters; repair it or pass --reset "
            "(which deletes its workflows)"
        )
    lpad.reset("", require_password=False)


def write_worker_files(lpad, home: Path) -> Path:
    """Write launchpad.yaml and fworker{,_cpu,_gpu}.yaml into the project folder; return the launchpad file."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "launchpad.yaml"
    lpad.to_file(str(path))
    workers = {
        "fworker.yaml": ("dp_screen_local", None, "every job (CPU and GPU categories) on one machine"),
        "fworker_cpu.yaml": ("dp_screen_cpu", "__none__", "enumeration, building, validation, summaries"),
        "fworker_gpu.yaml": ("dp_screen_gpu", "gpu", "relaxation chunks"),
    }
    for name, (wname, category, what) in workers.items():
        cat = "''" if category is None else category  # empty: no category filter, every job
        (home / name).write_text(
            f"# FireWorks worker written by dp-screen submit: {what}\nname: {wname}\n"
            f"category: {cat}\nquery: '{{}}'\nenv:\n  OMP_NUM_THREADS: 1\n"
        )
    return path


def launchpad(settings, path: Path | None = None):
    """The FireWorks LaunchPad: from a YAML file, or in the dp_screen database (collections prefixed fw_)."""
    from fireworks import LaunchPad

    from dp_screen.stores import database_uri

    if path is not None:
        try:
            return LaunchPad.from_file(str(path))
        except FileNotFoundError:
            raise InputError(f"launchpad file {str(path)!r} does not exist") from None
    uri = database_uri(settings)
    return LaunchPad(host=uri, uri_mode=True, name=f"{settings.database}_fw")
