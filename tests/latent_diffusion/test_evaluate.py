"""Prompt adherence by hand on fixed logits; the attribute classifier reads real pictures right (slow: trains it)."""
import pytest
import torch

from unigen.data import ShapesData, load
from unigen.families.latent_diffusion.evaluate import ATTRIBUTES, adherence, attribute_net, data_chance


class Fixed(torch.nn.Module):
    def __init__(self, preds):                                        # preds (N, 4) class ids per attribute
        super().__init__()
        self.preds = preds

    def forward(self, x):
        return [torch.nn.functional.one_hot(self.preds[:, i], k).float() for i, k in enumerate(ATTRIBUTES.values())]


def test_adherence_counts_matches_per_attribute_and_all_four():
    attrs = torch.tensor([[0, 1, 0, 4], [3, 2, 1, 8], [7, 0, 1, 0], [5, 1, 0, 3]])
    preds = attrs.clone()
    preds[1, 0] = 4                                                   # colour wrong in row 1
    preds[2, 3] = 1                                                   # position wrong in row 2
    preds[3, 0], preds[3, 2] = 6, 1                                   # colour and size wrong in row 3
    got = adherence(Fixed(preds), torch.zeros(4, 3, 32, 32), attrs)
    assert got == {"adherence_colour": 0.5, "adherence_shape": 1.0, "adherence_size": 0.75,
                   "adherence_position": 0.75, "adherence_all": 0.25}


def test_data_chance_is_the_adherence_of_every_picture_to_every_prompt():
    """Brute force: pair each prompt with each data picture (an image that ignores its prompt), count matches."""
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor(list(ATTRIBUTES.values()))
    prompts = (torch.rand(40, 4, generator=g) ** 2 * sizes).long()     # skewed, like shapes' positions
    data = (torch.rand(70, 4, generator=g) ** 3 * sizes).long()
    got = data_chance(prompts, data)
    for i, k in enumerate(ATTRIBUTES):
        pairs = (prompts[:, None, i] == data[None, :, i]).double().mean().item()   # (40, 70) all pairings
        assert got[f"chance_data_{k}"] == pytest.approx(pairs, rel=1e-12)
    assert got["chance_data_position"] > 1 / 9                        # skewed attributes beat uniform chance


@pytest.mark.slow
def test_attribute_classifier_reads_real_test_pictures():
    test = load(ShapesData(max_shapes=1), "test").tensors
    acc = adherence(attribute_net(), test["x"], test["attributes"][:, 0])
    assert acc["adherence_colour"] > 0.98 and acc["adherence_shape"] > 0.98
    assert acc["adherence_size"] > 0.9 and acc["adherence_position"] > 0.9      # boundary cases are ambiguous
