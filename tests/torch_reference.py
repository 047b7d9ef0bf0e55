"""torch and transformers as the encoder parity tests load them: a test module that imports
them from here is skipped where either is missing; one torch thread, and no logging or
progress bars from transformers."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
