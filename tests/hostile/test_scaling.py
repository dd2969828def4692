"""Work that grows with the number of tensors must stay near-linear: a header of 100,000 tiny
tensors (the most a file may hold) used to spend hours in ``attach_vectors``. The fast version
must pick exactly the layer the former scan picked."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.layers import attach_vectors, module_name


def attach_by_scan(keys, layer_names, vectors):
    """The former implementation, a scan of every key per vector: the oracle."""
    layer_set = set(layer_names)
    at = [module_name(k) if module_name(k) in layer_set else None for k in keys]
    result = {}
    for i, key in enumerate(keys):
        if key not in vectors:
            continue
        owner_mod = key.rsplit(".", 1)[0] if "." in key else ""
        if owner_mod in layer_set:
            result[key] = owner_mod
            continue
        parent = owner_mod.rsplit(".", 1)[0] + "." if "." in owner_mod else ""
        back = [at[j] for j in range(i - 1, -1, -1) if at[j] is not None]
        ahead = [at[j] for j in range(i + 1, len(keys)) if at[j] is not None]
        same = [n for n in back + ahead if n.startswith(parent)]
        result[key] = same[0] if same else (back[0] if back else (ahead[0] if ahead else None))
    return result


part = st.sampled_from(["a", "b", "0", "1", "fc", "ln", "x.y"])
key = st.lists(part, min_size=1, max_size=4).map(".".join).flatmap(
    lambda mod: st.sampled_from([f"{mod}.weight", f"{mod}.bias", mod]))


@settings(max_examples=300, deadline=None)
@given(st.lists(key, min_size=1, max_size=30, unique=True), st.data())
def test_attach_vectors_matches_the_scan(keys, data):
    is_layer = data.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    layers = [module_name(k) for k, flag in zip(keys, is_layer) if flag and k.endswith(".weight")]
    vectors = [k for k, flag in zip(keys, is_layer) if not flag]
    assert attach_vectors(keys, layers, vectors) == attach_by_scan(keys, layers, set(vectors))


def test_many_vectors_without_layers_are_fast():
    keys = [f"t{i}" for i in range(200_000)]
    out = attach_vectors(keys, [], keys)  # quadratic before: ~4e10 steps
    assert len(out) == 200_000 and set(out.values()) == {None}
