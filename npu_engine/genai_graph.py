"""OpenVINO GenAI's GGUF-built graph, mended so that the NPU compiles it.

Two details of the graph GenAI builds from a GGUF (2026.4) stop NPUW, whose LLM pipeline makes
every shape static and turns the key/value state into inputs and outputs named after it. The CPU
reads both as intended, so the mended graph answers exactly as before on the CPU (tests):

- Grouped-query attention repeats each key/value head with a bidirectional Broadcast whose target
  names 0 for the sequence length, meaning "the input's". Bidirectional broadcasting merges a 0
  with a static 256 as a mismatch ("Expecting either 1 or 256. Got 0"); 1 says "the input's".
- Each value cache's state variable is named `past_key_values.N.valuepresent.N.key`, as its key's
  is (`…keypresent.N.key`), so the outputs NPUW makes collide ("Duplicate generate output tensor
  name across ports: present.0.key"); optimum-intel names it `…valuepresent.N.value`.
"""

import re
from dataclasses import dataclass
from typing import Any

_VALUE_STATE = re.compile(r"^(past_key_values\.(\d+)\.value)present\.\d+\.key$")


@dataclass(frozen=True)
class Mended:
    broadcasts: int  # repeat targets whose 0 became 1
    states: int  # value cache variables renamed


def mend_for_npu(model: Any) -> Mended:
    """Mend `model` (an openvino.Model GenAI built from a GGUF) in place; see the module's text."""
    import numpy as np
    from openvino import opset13

    broadcasts = 0
    for node in model.get_ordered_ops():
        if not _is_head_repeat(node):
            continue
        for target in node.input(1).get_source_output().get_node().inputs():
            source = target.get_source_output().get_node()
            if source.get_type_name() == "Constant" and source.get_data().tolist() == [0]:
                target.replace_source_output(opset13.constant(np.array([1], dtype=np.int64)).output(0))
                broadcasts += 1
    states = 0
    for variable in model.get_variables():
        info = variable.get_info()
        named = _VALUE_STATE.sub(r"\1present.\2.value", info.variable_id)
        if named != info.variable_id:
            info.variable_id = named
            variable.update(info)
            states += 1
    if broadcasts:
        model.validate_nodes_and_infer_types()
    return Mended(broadcasts, states)


def _is_head_repeat(node: Any) -> bool:
    """A bidirectional Broadcast of an unsqueezed key/value tensor to a target made by a Concat:
    GenAI's repeat of the key/value heads (the initial state's Broadcast broadcasts a scalar)."""
    if node.get_type_name() != "Broadcast" or node.get_attributes().get("mode") != "bidirectional":
        return False
    data = node.input(0).get_source_output().get_node()
    target = node.input(1).get_source_output().get_node()
    return bool(data.get_type_name() == "Unsqueeze" and target.get_type_name() == "Concat")
