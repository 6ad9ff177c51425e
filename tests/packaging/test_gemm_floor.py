"""bench/gemm_floor.py: the recorder sees every matmul with its layout, the replay does the same
work, and the benchmark writes its table."""
import torch

from bench import gemm_floor


def test_the_recorder_sees_each_gemm_with_its_shapes_strides_and_dtype():
    a, b = torch.randn(6, 4), torch.randn(5, 4)
    bias = torch.randn(5)
    stacked = torch.randn(3, 6, 4, dtype=torch.float64)
    w = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)

    def work():
        torch.nn.functional.linear(a, b, bias)  # addmm with a transposed weight
        (a @ b.t()).sum()
        torch.bmm(stacked, w).sum().backward()  # bmm forward and the weight's backward bmm
    calls = gemm_floor.record(work)
    names = [f.overloadpacket.__name__ for f, _, _ in calls]
    assert names == ["addmm", "mm", "bmm", "bmm"]
    _, spec, _ = calls[0]
    assert spec[2] == ((4, 5), (1, 4), torch.float32)  # b.t(): the layout is kept
    assert calls[2][1][1][2] == torch.float64
    ms, gflop = gemm_floor.replay_ms(calls, repeats=2)
    assert ms > 0
    assert abs(gflop * 1e9 - (2 * 6 * 4 * 5 * 2 + 2 * 3 * 6 * 4 * 2 * 2)) < 1e-6


def test_the_benchmark_writes_its_table(tmp_path):
    assert gemm_floor.main(["--workloads", "train1", "--repeats", "1",
                            "--out", str(tmp_path)]) == 0
    text = (tmp_path / "gemm_floor.md").read_text()
    assert "| train1 | fp32 |" in text and "| train1 | bf16 |" in text
    assert "its GEMMs alone are" in text
    rows = (tmp_path / "gemm_floor.csv").read_text().splitlines()
    assert rows[0].startswith("workload,precision,full_ms") and len(rows) == 3
