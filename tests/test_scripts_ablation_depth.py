"""scripts/ablation_depth.py end to end at toy size: both models trained, judged and reported."""
import json
import math

from scripts import ablation_depth


def test_ablation_trains_both_models_and_reports_depth_and_image_metrics(tmp_path, capsys, monkeypatch):
    # PSNR and FID come from the shared metric objects (evaluation/metrics.py), not own code
    import evaluation.metrics
    used = {"fid": 0, "psnr": 0}

    class SpyFID(evaluation.metrics.FID):
        def compute(self, *args, **kwargs):
            used["fid"] += 1
            return super().compute(*args, **kwargs)

    class SpyPaired(evaluation.metrics.Paired):
        def compute(self):
            used["psnr"] += 1
            values = super().compute()
            used["last_psnr"] = values["psnr"]
            return values
    monkeypatch.setattr(evaluation.metrics, "FID", SpyFID)
    monkeypatch.setattr(evaluation.metrics, "Paired", SpyPaired)
    out = tmp_path / "abl"
    results = ablation_depth.main([
        "--out", str(out), "--crop_size", "32", "--ngf", "8", "--ndf", "8", "--ngf_depth", "8",
        "--batchSize", "2", "--niter", "1", "--synthetic_num", "6", "--test_num", "4",
        "--estimator_epochs", "1"])
    assert set(results) == {"spade", "depthspade"}
    for netG, r in results.items():
        assert r["images"] == 4
        for key in ("depth_l1", "depth_delta1", "image_l1", "psnr", "fid", "real_depth_l1"):
            assert math.isfinite(r[key]), (netG, key)
        assert 0.0 <= r["depth_delta1"] <= 1.0
    assert used["fid"] == used["psnr"] == 2  # once per model
    assert results["depthspade"]["psnr"] == used["last_psnr"]  # the per-image mean, as evaluate's
    assert results["spade"]["gen_depth_l1"] is None  # spade has no depth generator
    assert results["depthspade"]["gen_depth_l1"] >= 0.0
    # Both are judged on the same real photos, so the floor row is the same for both.
    assert results["spade"]["real_depth_l1"] == results["depthspade"]["real_depth_l1"]
    # The judge and the discriminator's estimator are different networks (different seeds).
    ckpts = out / "checkpoints"
    assert (ckpts / "depth_estimator" / "depth_estimator.pth").is_file()
    assert (ckpts / "depth_judge" / "depth_estimator.pth").is_file()
    assert (ckpts / "ablation_depthspade" / "latest_net_G_depth.pth").is_file()
    assert not (ckpts / "ablation_spade" / "latest_net_G_depth.pth").exists()
    # The report is strict JSON (no NaN) and the table has a row per model plus the floor.
    report = json.loads((out / "ablation.json").read_text(),
                        parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert report["results"]["depthspade"]["images"] == 4
    printed = capsys.readouterr().out
    assert "| spade |" in printed and "| depthspade |" in printed and "| real photos (floor) |" in printed


def test_table_marks_missing_values_instead_of_nan():
    row = {"depth_l1": 0.1, "depth_delta1": 0.5, "gen_depth_l1": None, "image_l1": 0.2, "psnr": 15.0, "fid": 300.0,
           "sec_per_image": 0.01, "real_depth_l1": 0.05, "real_depth_delta1": 0.7}
    table = ablation_depth.format_table({"spade": row})
    assert "nan" not in table.lower()
    assert "| spade | 0.1000 | 0.5000 | – | 0.2000 | 15.0000 | 300.0000 | 0.0100 |" in table
    assert len(table.splitlines()) == 4  # header, rule, model, floor
