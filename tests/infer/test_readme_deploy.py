"""Every command of the README's "Deploying a model" section, run as written on tiny models."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import readme_bash_commands
from pipeline.cli import main
from pipeline.nets.deploy import onnx_available
from pipeline.nets.export import export_subnet, save_model
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import smallest



def section_commands() -> list[str]:
    return readme_bash_commands("Deploying a model")


@pytest.mark.skipif(onnx_available() is not None, reason=str(onnx_available()))
def test_readme_deploy_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for task, name, hw in (("seg", "S-large", [64, 64]), ("pose", "P-large", [64, 64])):
        sup = SuperNet(task, 8, seed=0)
        sup.set_arch(smallest(task))
        save_model(Path(f"results/{task}/finetune/{name}/model"), export_subnet(sup).eval(),
                   {"input_hw": hw})
    # The pose command reads an ONNX artifact: the fine-tune stage writes only TorchScript.
    assert main(["export", "results/pose/finetune/P-large/model", "--format", "onnx"]) == 0
    rng = np.random.default_rng(0)
    Path("street").mkdir()
    for i, (w, h) in enumerate([(70, 50), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f"street/{i}.png")
    Image.fromarray(rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)).save("000000000001.jpg")
    Path("people.txt").write_text("000000000001.jpg\n")
    Path("dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1,
                                              "bbox": [5, 5, 40, 70], "score": 0.9}]))
    cmds = section_commands()
    assert len(cmds) == 4
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "scalenas"
        assert main(argv[1:] + (["-q"] if argv[1] == "predict" else [])) == 0, cmd
    assert Path("results/seg/finetune/S-large/model/deploy/optimized.ts").is_file()
    assert Path("seg.onnx").is_file()
    assert sorted(p.name for p in Path("masks").iterdir()) == [
        "0_mask.png", "0_pred.png", "1_mask.png", "1_pred.png"]
    res = json.loads(Path("poses/results.json").read_text())
    assert len(res) == 1 and res[0]["image_id"] == 1
