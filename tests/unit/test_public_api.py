"""The public names of the package import, and `import voiceserver` stays light."""

import subprocess
import sys

import voiceserver


def test_every_public_name_resolves():
    for name in voiceserver.__all__:
        assert getattr(voiceserver, name) is not None, name


def test_mastra_style_public_names_import_from_the_package_root():
    from voiceserver import (  # noqa: F401
        Agent,
        CompositeVoice,
        LanceDBStore,
        Memory,
        create_step,
        create_tool,
        create_workflow,
        tool,
    )


def test_import_is_lazy():
    code = ("import sys, voiceserver; "
            "print(any(m.startswith(('lancedb', 'openai', 'faster_whisper')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
