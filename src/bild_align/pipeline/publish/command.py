"""Publishing: BiLD as a `custom_generate` repository, and an aligned model with its card.

    bild-align export-generate bild-generate [--push-to-hub me/bild]
    bild-align push outputs/aligned --repo me/t5-small-aligned [--private]

    run_export_generate(ExportGenerateConfig(output="bild-generate"))
    run_push(PushConfig(model_dir="outputs/aligned", repo="me/t5-small-aligned"))

The exported folder is the package's own `generate_repo` (README.md with the Hub card,
custom_generate/generate.py, custom_generate/requirements.txt): transformers loads it with
`generate(..., custom_generate=FOLDER_OR_REPO, trust_remote_code=True)`.
"""

from __future__ import annotations

from pathlib import Path

from bild_align.configs import ExportGenerateConfig, PushConfig, check
from bild_align.errors import UserError
from bild_align.reporting import report
from bild_align.resources import GENERATE_REPO
from bild_align.runs.files import check_writable_folder, write_text_atomic
from bild_align.runs.hub import check_hub_access, upload

EXPORTED = ("README.md", "custom_generate/generate.py", "custom_generate/requirements.txt")
# written beside an export (never uploaded): a folder without it holds someone's own files
EXPORT_MARKER = ".bild-align-export"


def _files_in(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and ".cache" not in path.parts
    }


def check_export_folder(output: Path) -> None:
    """New, empty, or an earlier export (rewritten): never a folder of the user's own files."""
    if output.exists() and not output.is_dir():
        raise UserError(f"{output} is a file; give a folder to export into")
    check_writable_folder(output, "export-generate DIR")
    files = _files_in(output) if output.is_dir() else set()
    earlier_export = EXPORT_MARKER in files and files <= {*EXPORTED, EXPORT_MARKER}
    if files and not earlier_export:
        raise UserError(
            f"{output} holds files that are not an earlier export "
            f"({', '.join(sorted(files)[:3])}{', ...' if len(files) > 3 else ''}); "
            "choose a new or empty folder"
        )


def run_export_generate(config: ExportGenerateConfig) -> Path:
    check(config)
    output = Path(config.output).expanduser()
    check_export_folder(output)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / EXPORT_MARKER, "written by bild-align export-generate\n")
    for name in EXPORTED:
        text = (GENERATE_REPO / name).read_text(encoding="utf-8")
        if name == "README.md":
            text = text.replace(
                'custom_generate="REPO"', f'custom_generate="{config.push_to_hub or output}"'
            )  # noqa: E501
        write_text_atomic(output / name, text)
    if config.push_to_hub:  # after the export, so that "upload it later" names a real folder
        later = f"upload the exported folder later (`hf upload {config.push_to_hub} {output}`)"
        hub = check_hub_access(config.push_to_hub, config.private, repo_type="model", later=later)
        url = upload(
            hub,
            output,
            config.push_to_hub,
            repo_type="model",
            later=f"hf upload {config.push_to_hub} {output}",
            allow_patterns=list(EXPORTED),
        )
        report(f"pushed to {url}")
    return output


def run_push(config: PushConfig) -> str:
    from bild_align.runs.model_card import publish_model

    folder = Path(config.model_dir).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(
            f"{config.model_dir} holds no model (config.json); give the output_dir of "
            "`bild-align train`"
        )
    later = "run this command again once the Hub can be reached (nothing was uploaded)"
    hub = check_hub_access(
        config.repo, config.private, repo_type="model", later=later, option="--repo"
    )
    return publish_model(hub, folder, config.repo)


__all__ = ["run_export_generate", "run_push"]
