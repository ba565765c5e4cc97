"""METEOR 1.5 through the jar that pycocoevalcap ships (Denkowski & Lavie 2014), in its ``-stdio`` protocol.

The jar is run as ``java -Xmx2G -jar meteor-1.5.jar - - -stdio -l <lang> -norm`` (pycocoevalcap's settings, with the
language made explicit): one ``SCORE ||| ref1 ||| ref2 ||| hyp`` line per segment returns its sufficient statistics,
one ``EVAL ||| stats ||| ...`` line returns every segment's score and then the corpus score (METEOR's corpus score is
computed from the summed statistics, not the mean of segment scores).

Languages: METEOR 1.5 knows en, cz, de, es, fr (and a few more with fewer modules), but pycocoevalcap ships only the
English paraphrase table, so only ``en`` is supported here; any other target language is *not applicable* (an
explicit result, never a zero).  NLTK's ``meteor_score`` is a different, non-canonical implementation and is not used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Sequence

from leverplus.metrics.signature import make_signature, package_version

SUPPORTED = ("en",)
SETTINGS = {"version": "1.5", "norm": True, "task": "default(rank)"}


class MeteorUnavailable(RuntimeError):
    pass


def jar_path() -> str:
    import pycocoevalcap.meteor.meteor as m

    return os.path.join(os.path.dirname(os.path.abspath(m.__file__)), "meteor-1.5.jar")


def supported(lang: str) -> bool:
    return lang.lower().split("-")[0] in SUPPORTED


def meteor_signature(lang: str) -> str:
    return make_signature("meteor", {**SETTINGS, "lang": lang, "impl": "jar-stdio",
                                     "pycocoevalcap": package_version("pycocoevalcap")})


def not_applicable(lang: str) -> dict:
    return {"metric": "meteor", "status": "not applicable", "lang": lang,
            "reason": f"METEOR 1.5 resources for {lang!r} are not shipped (pycocoevalcap has only the English "
                      f"paraphrase table); supported: {list(SUPPORTED)}"}


def _clean(text: str) -> str:
    return " ".join(text.replace("|||", "").split())


def meteor_systems(systems: dict[str, Sequence[str]], refs_per_item: Sequence[Sequence[str]], *, lang: str = "en",
                   java: str | None = None, xmx: str = "2G") -> dict[str, dict]:
    """Corpus and per-segment METEOR 1.5 (0-1 scale) of several systems on the same references, in one JVM (loading
    the paraphrase table takes most of the time)."""
    if not supported(lang):
        raise MeteorUnavailable(not_applicable(lang)["reason"])
    java = java or shutil.which("java")
    if not java:
        raise MeteorUnavailable("METEOR needs Java (java not found on PATH)")
    jar = jar_path()
    cmd = [java, "-Dfile.encoding=UTF-8", f"-Xmx{xmx}", "-jar", os.path.basename(jar), "-", "-", "-stdio",
           "-l", lang, "-norm"]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(jar), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def ask(line: str) -> str:
        proc.stdin.write((line + "\n").encode("utf-8"))
        proc.stdin.flush()
        reply = proc.stdout.readline().decode("utf-8").strip()
        if not reply:
            raise MeteorUnavailable(f"METEOR jar stopped answering: {proc.stderr.read().decode()[:300]}")
        return reply

    out = {}
    try:
        for name, hyps in systems.items():
            if len(hyps) != len(refs_per_item) or not hyps:
                raise ValueError(f"system {name!r}: {len(hyps)} hypotheses but {len(refs_per_item)} reference lists")
            # one request, one reply: the jar answers each SCORE line with the segment's statistics
            stats = [ask(" ||| ".join(["SCORE", *(_clean(r) for r in refs), _clean(h)]))
                     for h, refs in zip(hyps, refs_per_item)]
            first = ask("EVAL ||| " + " ||| ".join(stats))
            seg = [float(first)] + [float(proc.stdout.readline().strip()) for _ in stats[1:]]
            corpus = float(proc.stdout.readline().strip())
            out[name] = {"metric": "meteor", "score": corpus, "per_segment": seg, "n": len(seg), "lang": lang,
                         "signature": meteor_signature(lang)}
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    return out


def meteor(hyps: Sequence[str], refs_per_item: Sequence[Sequence[str]], *, lang: str = "en", **kw) -> dict:
    """Corpus and per-segment METEOR 1.5 (0-1 scale) of one system."""
    return meteor_systems({"_": hyps}, refs_per_item, lang=lang, **kw)["_"]
