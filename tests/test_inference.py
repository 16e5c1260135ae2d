import nibabel as nib
import numpy as np
import pytest
import torch

from ronas_optuna.data import MSDDataset
from ronas_optuna.inference import gaussian_importance, predict_files, sliding_window


def test_sliding_window_handles_small_volumes_and_uniform_overlap():
    def net(x):
        return torch.stack([x[:, 0], -x[:, 0]], 1)

    img = np.random.default_rng(0).normal(size=(1, 10, 23, 7)).astype(np.float32)
    probs = sliding_window(net, img, (8, 8, 8), 2, overlap=0.5, mirror=True)
    assert probs.shape == (2, 10, 23, 7)
    expected = torch.softmax(torch.stack([torch.tensor(img[0]), -torch.tensor(img[0])]), 0)
    assert torch.allclose(probs, expected, atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(net, img, (8, 8, 8), 2, overlap=1.0)


@pytest.mark.parametrize("patch", [(8, 8, 8), (5, 6, 7)])
def test_gaussian_importance_is_centred_and_positive(patch):
    g = gaussian_importance(patch)
    assert g.shape == patch and float(g.min()) > 0 and float(g.max()) == pytest.approx(1.0)
    centre = tuple(p // 2 for p in patch)
    assert float(g[centre]) >= float(g[0, 0, 0])


def test_predict_files_keep_each_inputs_geometry(synthetic_root, tmp_path):
    ds = MSDDataset(synthetic_root, spacing=1.5, cache_dir=tmp_path / "cache")

    class Bright(torch.nn.Module):  # class 1 where the image is bright, else background
        def forward(self, x):
            return torch.cat([-x[:, :1], x[:, :1], torch.full_like(x[:, :1], -9.0)], 1)

    net = Bright()
    src = ds.cases[0].images[0]
    out = predict_files(
        net,
        ds.preprocessor,
        (16, 16, 16),
        [str(src)],
        tmp_path / "pred",
        num_classes=3,
        overlap=0.25,
        mirror=True,
    )
    ref, pred = nib.load(str(src)), nib.load(str(out[0]))
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    values = set(np.unique(np.asarray(pred.dataobj)).tolist())
    assert values == {0, 1}
