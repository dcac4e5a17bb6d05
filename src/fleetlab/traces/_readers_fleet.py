"""Readers for fleet telemetry: LLM requests, serverless invocations, VMs, usage, GPU pods.

Each family lives in its own private module; this one assembles their formats in the
order detection tries them (specific formats first, the generic canonical reader last).
"""

from __future__ import annotations

from fleetlab.traces._formats import Format
from fleetlab.traces._read_alibaba import FORMATS as ALIBABA
from fleetlab.traces._read_canonical import FORMATS as CANONICAL
from fleetlab.traces._read_functions import FORMATS as FUNCTIONS
from fleetlab.traces._read_gpu import FORMATS as GPU
from fleetlab.traces._read_llm import FORMATS as LLM
from fleetlab.traces._read_servegen import FORMATS as SERVEGEN
from fleetlab.traces._read_vms import FORMATS as VMS

FORMATS: tuple[Format, ...] = (*LLM, *SERVEGEN, *FUNCTIONS, *VMS, *ALIBABA, *GPU, *CANONICAL)
