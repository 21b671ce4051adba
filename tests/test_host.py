from slowfast_dist.profiling import host


def test_cpu_model_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                    "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n")
    assert host.cpu_model(str(info)) == "Intel(R) Xeon(R) Platinum 8480+"


def test_cpu_model_falls_back_where_there_is_no_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(host.platform, "processor", lambda: "")
    monkeypatch.setattr(host.platform, "machine", lambda: "aarch64")
    assert host.cpu_model(str(tmp_path / "absent")) == "aarch64"
    (tmp_path / "no_model").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert host.cpu_model(str(tmp_path / "no_model")) == "aarch64"


def test_describe_cpu_names_the_cores_this_process_may_use():
    import os

    assert host.describe_cpu().endswith(f", {len(os.sched_getaffinity(0))} cores")
