"""ADS: PSRG (eqs. 2–5), PCRG (eqs. 6–7, chunked), the ADS model's E_D and its config checks."""

from __future__ import annotations

import pytest
import torch

from feature_pipeline.spec import FeatureKind, FeatureSpec, TableSpec
from recsys.configs import ADSConfig
from recsys.models.ads import ADS, domain_feature_keys
from recsys.modules.ads import PCRG, PSRG
from seedrec.errors import ConfigError

B, T, D_S, D_D, D_H = 3, 6, 4, 5, 7


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_psrg_identity() -> None:
    """η = 1, W_shared = I, W_private ≡ 1, zero bias: E_S passes through bit-exactly (spec §4.2)."""
    psrg = PSRG(D_S, D_D, hidden_dim=D_H, eta=1.0)
    _randomise(psrg)
    with torch.no_grad():
        psrg.w_shared.copy_(torch.eye(D_S))
        psrg.private[-1].weight.zero_()
        psrg.private[-1].bias.fill_(100.0)  # sigmoid(100) == 1.0 exactly in float32
        psrg.bias[-1].weight.zero_()
        psrg.bias[-1].bias.zero_()
    seq = torch.randn(B, T, D_S)
    assert torch.equal(psrg(seq, torch.randn(B, D_D)), seq)


def test_psrg_starts_as_identity() -> None:
    seq = torch.randn(B, T, D_S)
    torch.testing.assert_close(PSRG(D_S, D_D, hidden_dim=D_H, eta=3.0)(seq, torch.randn(B, D_D)), seq)


def test_psrg_matches_equations() -> None:
    psrg = PSRG(D_S, D_D, hidden_dim=D_H, eta=2.0)
    _randomise(psrg, seed=1)
    seq, e_d = torch.randn(B, T, D_S), torch.randn(B, D_D)
    out = psrg(seq, e_d)
    assert out.shape == (B, T, D_S)
    p1, p2 = psrg.private[0], psrg.private[2]
    c1, c2 = psrg.bias[0], psrg.bias[2]
    for b in range(B):
        w_private = torch.sigmoid(torch.relu(e_d[b] @ p1.weight.T + p1.bias) @ p2.weight.T + p2.bias)  # eq. 2
        w_gen = 2.0 * (psrg.w_shared * w_private.reshape(D_S, D_S))  # eq. 3
        b_gen = torch.relu(e_d[b] @ c1.weight.T + c1.bias) @ c2.weight.T + c2.bias  # eq. 4
        torch.testing.assert_close(out[b], seq[b] @ w_gen.T + b_gen)  # eq. 5
    # Per sample: a different E_D gives a different layer for the same sequence.
    assert not torch.allclose(psrg(seq[:1], e_d[1:2]), out[:1])


def _pcrg_reference(pcrg: PCRG, cand: torch.Tensor, e_d: torch.Tensor) -> torch.Tensor:
    l1 = pcrg.hidden
    private = torch.relu(torch.cat([e_d, cand], -1) @ l1.weight.T + l1.bias) @ pcrg.w_q2.T + pcrg.b_q2  # eq. 6
    return private.reshape(cand.shape[0], T, -1) + cand[:, None, :]  # eq. 7


def test_pcrg_unchunked_matches_equations_and_chunked_with_g_equal_t() -> None:
    cand, e_d = torch.randn(B, D_S), torch.randn(B, D_D)
    unchunked = PCRG(D_S, D_D, hidden_dim=D_H, seq_len=T)
    _randomise(unchunked)
    chunked = PCRG(D_S, D_D, hidden_dim=D_H, seq_len=T, num_chunks=T)
    chunked.load_state_dict(unchunked.state_dict())
    out = unchunked(cand, e_d)
    assert out.shape == (B, T, D_S)
    torch.testing.assert_close(out, _pcrg_reference(unchunked, cand, e_d))
    assert torch.equal(chunked(cand, e_d), out)


@pytest.mark.parametrize(("G", "runs"), [(3, [2, 2, 2]), (2, [3, 3]), (1, [6]), (4, [2, 1, 2, 1])])
def test_pcrg_chunks_share_one_query(G: int, runs: list[int]) -> None:
    pcrg = PCRG(D_S, D_D, hidden_dim=D_H, seq_len=T, num_chunks=G)
    _randomise(pcrg)
    cand, e_d = torch.randn(B, D_S), torch.randn(B, D_D)
    out = pcrg(cand, e_d)
    assert out.shape == (B, T, D_S)
    generated = pcrg.generate(cand, e_d).reshape(B, G, D_S)
    start = 0
    for g, run in enumerate(runs):  # adjacent positions, one query per chunk, + the tiled candidate
        for t in range(start, start + run):
            torch.testing.assert_close(out[:, t], generated[:, g] + cand)
        start += run
    assert start == T


def test_pcrg_starts_at_the_tiled_candidate() -> None:
    cand = torch.randn(B, D_S)
    assert torch.equal(PCRG(D_S, D_D, hidden_dim=D_H, seq_len=T, num_chunks=2)(cand, torch.randn(B, D_D)), cand[:, None].expand(B, T, D_S))


# ---- the model's E_D and config checks -----------------------------------------------------------
def _spec(with_domain: bool = True) -> FeatureSpec:
    F = FeatureSpec.Feature
    tables = [TableSpec(name=n, num_embeddings=5, embedding_dim=3, hashed=True) for n in ("item", "domain", "activity", "age")]
    features = [
        F(name="item_id", kind=FeatureKind.SPARSE, table="item"),
        F(name="activity", kind=FeatureKind.SPARSE, table="activity"),
        F(name="age_bucket", kind=FeatureKind.SPARSE, table="age"),
        F(name="hist_item_id", kind=FeatureKind.SEQUENCE, table="item"),
        F(name="click", kind=FeatureKind.LABEL),
    ]
    if with_domain:
        features.append(F(name="domain", kind=FeatureKind.DOMAIN, table="domain"))
    return FeatureSpec(seq_len=T, tables=tuple(tables), features=tuple(features))


def test_domain_features() -> None:
    assert domain_feature_keys(ADSConfig(), _spec()) == ["domain", "age_bucket", "activity"]
    assert domain_feature_keys(ADSConfig(domain_features=("domain", "activity")), _spec()) == ["domain", "activity"]
    assert domain_feature_keys(ADSConfig(explicit_domain=False, domain_features=("activity",)), _spec()) == ["activity"]
    model = ADS(ADSConfig(attention_hidden=(4,), tower_hidden=(4,), hidden_dim=4), _spec())
    assert model.psrg is not None and model.psrg.private[0].in_features == 9  # d_D = 3 features × 3


def test_unknown_domain_features_are_named() -> None:
    with pytest.raises(ConfigError, match=r"`domain_features` names \['country', 'hist_item_id'\]"):
        ADS(ADSConfig(domain_features=("activity", "country", "hist_item_id")), _spec())


def test_explicit_domain_needs_a_domain_feature() -> None:
    with pytest.raises(ConfigError, match="`explicit_domain`"):
        ADS(ADSConfig(), _spec(with_domain=False))


def test_num_chunks_must_fit_t() -> None:
    with pytest.raises(ConfigError, match=f"`num_chunks` = {T + 1} exceeds the sequence length T = {T}"):
        ADS(ADSConfig(num_chunks=T + 1), _spec())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"eta": 0.0}, "eta"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_chunks": 0}, "num_chunks"),
        ({"domain_features": "activity"}, "domain_features"),
        ({"domain_features": ("a", "a")}, "domain_features"),
        ({"domain_features": (), "explicit_domain": False}, "explicit_domain"),
        ({"backbone": "can"}, "backbone"),
        ({"kind": "din"}, "kind"),
    ],
)
def test_ads_config_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`"):
        ADSConfig(**kwargs)  # type: ignore[arg-type]  # deliberately bad values
