"""Without network, a Hub id fails (or reads the cache) at once, not after retries."""

import pytest

from bild_align.data.tasks import get_task


def test_hub_reachable_asks_the_name_service_once_and_trusts_proxies(monkeypatch):
    import socket

    from bild_align.runs import hub

    asked = []

    def no_name_service(host, port, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name_service)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    hub.hub_reachable.cache_clear()
    try:
        assert hub.hub_reachable() is False and hub.hub_reachable() is False
        assert asked == ["huggingface.co"]  # once a process
        hub.hub_reachable.cache_clear()
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # it may resolve names
        assert hub.hub_reachable() is True and asked == ["huggingface.co"]
    finally:
        hub.hub_reachable.cache_clear()


def test_without_network_a_hub_model_reads_only_the_cache_and_a_hub_dataset_is_not_retried(
    monkeypatch, tmp_path
):
    import datasets
    import transformers

    from bild_align.data import tasks
    from bild_align.models import loading as models

    asked = []

    def config_from(name, **options):
        asked.append(options)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    monkeypatch.setattr("bild_align.runs.hub.hub_reachable", lambda: False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config_from)
    with pytest.raises(models.ModelLoadError, match="cannot be reached from here"):
        models.load_seq2seq_or_causal("someone/not-cached")
    assert asked == [{"local_files_only": True}]
    local = tmp_path / "model"
    local.mkdir()
    assert models.hub_options(str(local)) == {}  # a folder never asks the Hub

    def load_dataset(*args, **kwargs):
        raise AssertionError("datasets was asked although the Hub cannot be reached")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(tasks.TaskError, match="HF_HUB_OFFLINE=1"):
        tasks.load_rows(get_task("xsum"), "validation", max_samples=2)
