"""prefer_conda on a real channel: the .tar.bz2 twins leave the index and the disk, the rest stays whole."""

from __future__ import annotations

from pathlib import Path

from mirror_engine.demo import build_channel
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.explain import Query
from mirror_engine.progress import NullReporter
from tests.helpers import assert_index_sound, make_config, mirror, names


async def test_switching_prefer_conda_on_drops_the_twins_and_their_files(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    upstream = docs["linux-64"]
    twins = {
        name for name in upstream["packages"] if name.removesuffix(".tar.bz2") + ".conda" in upstream["packages.conda"]
    }
    assert twins, "the demo channel publishes some builds in both formats"
    before = make_config(tmp_path, channels=["pkgs"], platforms=["linux-64"])
    assert (await mirror(before)).exit_code == 0
    assert twins <= names(assert_index_sound(before, "linux-64", upstream))

    after = make_config(tmp_path, channels=["pkgs"], platforms=["linux-64"], prefer_conda=True)
    summary = await mirror(after)  # the filters changed: not "unchanged", though upstream is
    assert summary.exit_code == 0 and "linux-64" not in " ".join(summary.unchanged)
    doc = assert_index_sound(after, "linux-64", upstream)
    assert names(doc) == names(upstream) - twins
    assert not any((after.channel_dir / "linux-64" / name).exists() for name in twins)

    run = MirrorRun(after, LocalDestination(after.channel_dir), NullReporter())
    lines = await run.explain(Query.parse("zlib"))
    assert any(line.endswith("zlib-1.3.1-h5eee18b_0.tar.bz2: not mirrored; dropped by prefer_conda: the same "
                              "build is mirrored as .conda") for line in lines), lines  # fmt: skip
    assert any(line.endswith("zlib-1.3.1-h5eee18b_0.conda: mirrored; selected") for line in lines), lines
