"""N experts stacked as grouped convolutions == N separate WRNHead experts, exactly."""
import pytest
import torch

from poe.networks.grouped import GroupedWRNHeads
from poe.networks.wrn import WRNHead

CLASS_COUNTS = (5, 3, 7)


def separate_and_grouped(in_channels=32, width=16, blocks=2, seed=0):
    torch.manual_seed(seed)
    heads = [WRNHead(in_channels, width, k, blocks) for k in CLASS_COUNTS]
    for h in heads:  # non-trivial BN parameters and statistics, so a mix-up would show
        for m in h.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return heads, GroupedWRNHeads.from_heads(heads)


@pytest.mark.parametrize("train", [True, False])
def test_forward_matches_separate_experts(train):
    heads, grouped = separate_and_grouped()
    x = torch.randn(6, 32, 16, 16)
    for m in (*heads, grouped):
        m.train(train)
    outputs = grouped.split(grouped(x))
    for out, head in zip(outputs, heads):
        assert out.shape == (6, head.fc.out_features)
        torch.testing.assert_close(out, head(x), atol=1e-5, rtol=1e-5)


def test_gradients_and_bn_statistics_match_separate_experts():
    heads, grouped = separate_and_grouped()
    x = torch.randn(8, 32, 16, 16)
    weights = [1.0, 2.0, 3.0]  # a different loss per expert: a leak between experts would show
    sum(w * (o ** 2).mean() for w, o in zip(weights, grouped.split(grouped(x)))).backward()
    sum(w * (h(x) ** 2).mean() for w, h in zip(weights, heads)).backward()
    # Gradients map through the same conversion as weights: copy them into a twin and export it.
    twin = GroupedWRNHeads.from_heads(heads)
    with torch.no_grad():
        for p, q in zip(grouped.parameters(), twin.parameters()):
            q.copy_(p.grad)
    for head, grad in zip(heads, twin.state_dicts()):
        for name, p in head.named_parameters():
            torch.testing.assert_close(grad[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)
    # BatchNorm running statistics after the training-mode forward: the same per expert.
    for head, state in zip(heads, grouped.state_dicts()):
        for name, value in head.state_dict().items():
            if "running" in name:
                torch.testing.assert_close(state[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_state_dicts_round_trip_with_the_authors_key_names():
    heads, grouped = separate_and_grouped()
    states = grouped.state_dicts()
    for head, state in zip(heads, states):
        assert list(state) == list(head.state_dict())  # same keys, same order: block3.layer.N.*, bn1.*, fc.*
        for name, value in head.state_dict().items():
            assert torch.equal(state[name], value), name
    rebuilt = grouped.heads(lambda k: WRNHead(32, 16, k, 2))
    assert [h.fc.out_features for h in rebuilt] == list(CLASS_COUNTS)
    assert torch.equal(rebuilt[1].block3.layer[0].conv1.weight, heads[1].block3.layer[0].conv1.weight)


def test_heads_of_other_shapes_are_refused():
    with pytest.raises(ValueError):
        GroupedWRNHeads.from_heads([WRNHead(32, 16, 5, 2), WRNHead(32, 8, 5, 2)])
    with pytest.raises(ValueError):
        GroupedWRNHeads.from_heads([torch.nn.Linear(3, 4)])
