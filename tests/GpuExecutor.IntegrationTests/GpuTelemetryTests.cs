using System.Globalization;
using System.Text.RegularExpressions;
using GpuExecutor.HostFiles;
using GpuExecutor.Telemetry;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// GPU telemetry through the simulator on the test bed, with a fake nvidia-smi (nothing here has
/// a GPU) whose utilisation changes from call to call: GPU 0 climbs, GPU 2 stays at 0 %, and
/// GPU 1, outside the runner's pool, is busy with something else.
/// </summary>
public sealed partial class GpuTelemetryTests
{
    /// <summary>Three fake GPUs, of which the runner's pool is GPUs 0 and 2; samples every second.</summary>
    internal static ExecutorWorkspace ThreeGpuHost(string extraConfig = "")
    {
        var workspace = new ExecutorWorkspace(extraConfig: "[telemetry]\ngpu_sample_seconds = 1\nidle_utilization_percent = 10\n" + extraConfig);
        var directory = Directory.CreateDirectory(Path.Combine(workspace.Root, "fake-nvidia-smi")).FullName;
        File.WriteAllText(Path.Combine(directory, "query.txt"),
            "0, GPU-t0, NVIDIA L4, 23034, 0, 0, [N/A]\n1, GPU-t1, NVIDIA L4, 23034, 0, 0, [N/A]\n2, GPU-t2, NVIDIA L4, 23034, 0, 0, [N/A]\n");
        File.WriteAllText(Path.Combine(directory, "topo.txt"), "\tGPU0\tGPU1\tGPU2\nGPU0\t X \tPHB\tPHB\nGPU1\tPHB\t X \tPHB\nGPU2\tPHB\tPHB\t X \n");
        var script = Path.Combine(directory, "nvidia-smi");
        // The sample query (it alone asks for utilization.memory) answers call n with GPU 0 at
        // 10 + 20n % (at most 100) and 1000 + 100n MiB; the inventory and topology are fixed.
        File.WriteAllText(script, $$"""
            #!/bin/bash
            d='{{directory}}'
            case "$*" in
              *topo*) cat "$d/topo.txt" ;;
              *utilization.memory*)
                n=$(cat "$d/count" 2>/dev/null || echo 0); echo $((n + 1)) > "$d/count"
                u=$((10 + 20 * n)); [ $u -gt 100 ] && u=100
                printf '0, GPU-t0, %d, 30, %d, 200.5, 60, 1800\n1, GPU-t1, 88, 88, 9000, 250, 70, 1900\n2, GPU-t2, 0, 0, 300, 25, 35, 210\n' "$u" "$((1000 + 100 * n))" ;;
              *) cat "$d/query.txt" ;;
            esac
            """.Replace("\r", "", StringComparison.Ordinal));
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.AppendAllText(workspace.ConfigPath, $"\n[gpus]\nmode = \"none\"\nnvidia_smi = \"{script}\"\npool = [0, 2]\n");
        return workspace;
    }

    [GeneratedRegex(@"^  (?<index>\d+) +(?<uuid>GPU-\S+) +(?<mean>\d+)% +(?<p95>\d+)% +(?<peak>\d+) MiB +(?<power>\d+) W$", RegexOptions.Multiline)]
    private static partial Regex UsageRow();

    [GeneratedRegex(@"(?<gpus>\d+) GPU\(s\) for [\d.]+ min: (?<hours>[\d.]+) GPU-hours \((?<samples>\d+) samples, one every 1 s\)\.")]
    private static partial Regex UsageFooter();

    private static string Whole(double value) => value.ToString("0", CultureInfo.InvariantCulture);

    [Fact]
    public async Task A_job_gets_its_gpus_usage_from_the_samples_an_idle_warning_for_the_idle_one_only_and_the_sampler_ends_with_the_job()
    {
        using var workspace = ThreeGpuHost();
        const long jobId = 7901;

        var simulation = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            variables = new Dictionary<string, string> { ["GPU_COUNT"] = "2" },
            script = new[] { "echo \"gpus: $NVIDIA_VISIBLE_DEVICES\"", "sleep 6" },
            // What `artifacts: paths: [.gpu-executor/]` would publish, as the job sees it.
            after_script = new[] { "sed 's/^/published: /' \"$CI_PROJECT_DIR/.gpu-executor/gpu-usage.csv\"" },
        });

        Assert.True(simulation.Result.Outcome == "success", simulation.Log);
        Assert.Contains("gpus: GPU-t0,GPU-t2", simulation.Log);
        Assert.Contains("GPU usage is sampled every 1 s", simulation.Log);

        // The CSV: only the job's own GPUs, every line a sample.
        var csv = Path.Combine(workspace.Root, "state", "telemetry", $"job-{jobId}", "gpu.csv");
        var lines = File.ReadAllLines(csv);
        Assert.Equal(GpuSample.CsvHeader, lines[0]);
        var samples = lines.Skip(1).Select(line => GpuSample.FromCsv(line) ?? throw new Xunit.Sdk.XunitException($"not a sample: {line}")).ToList();
        Assert.Equal(["GPU-t0", "GPU-t2"], samples.Select(sample => sample.Uuid).Distinct().Order());

        // The copy in the project directory: the header and the samples taken up to the main step's end.
        var published = simulation.Log.Split('\n').Where(line => line.StartsWith("published: ", StringComparison.Ordinal)).Select(line => line["published: ".Length..].TrimEnd('\r')).ToList();
        Assert.True(published.Count >= 3, simulation.Log);
        Assert.Equal(lines.Take(published.Count), published);
        Assert.Contains("Samples: $CI_PROJECT_DIR/.gpu-executor/gpu-usage.csv", simulation.Log);

        // The report covers the samples taken before the step ended: as many per GPU as its footer counts.
        var footer = UsageFooter().Match(simulation.Log);
        Assert.True(footer.Success, simulation.Log);
        Assert.Equal("2", footer.Groups["gpus"].Value);
        var perGpu = int.Parse(footer.Groups["samples"].Value, CultureInfo.InvariantCulture) / 2;
        Assert.InRange(perGpu, 3, 10);
        var rows = UsageRow().Matches(simulation.Log).ToDictionary(row => row.Groups["uuid"].Value);
        Assert.Equal(["GPU-t0", "GPU-t2"], rows.Keys.Order());
        foreach (var (uuid, row) in rows)
        {
            var reported = samples.Where(sample => sample.Uuid == uuid).OrderBy(sample => sample.Time).Take(perGpu).ToList();
            var utilization = reported.Select(sample => sample.UtilizationPercent!.Value).Order().ToList();
            Assert.Equal(Whole(utilization.Average()), row.Groups["mean"].Value);
            Assert.Equal(Whole(utilization[(int)Math.Ceiling(0.95 * utilization.Count) - 1]), row.Groups["p95"].Value);
            Assert.Equal(Whole(reported.Max(sample => sample.MemoryUsedMiB!.Value)), row.Groups["peak"].Value);
            Assert.Equal(Whole(reported.Average(sample => sample.PowerWatts!.Value)), row.Groups["power"].Value);
        }
        Assert.True(double.Parse(footer.Groups["hours"].Value, CultureInfo.InvariantCulture) > 0);

        // GPU 2 stayed at 0 %: warned; GPU 0 climbed to 100 %: not warned.
        Assert.Contains("WARNING: GPU 2 averaged 0% for", simulation.Log);
        Assert.DoesNotContain("WARNING: GPU 0 averaged", simulation.Log);

        await AssertSamplerEndsAsync(jobId, "the job's GPU sampler outlived its container");
        Assert.Contains("sampling ends", File.ReadAllText(Path.Combine(workspace.Root, "state", "telemetry", $"job-{jobId}", "sampler.log")));
    }

    [Fact]
    public async Task A_checkpointed_runs_samples_are_kept_in_the_store_beside_its_history()
    {
        using var workspace = ThreeGpuHost();
        const long jobId = 7902;

        var simulation = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            variables = new Dictionary<string, string> { ["GPU_COUNT"] = "1", ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = "telemetry-run" },
            script = new[] { "sleep 3" },
        });

        Assert.True(simulation.Result.Outcome == "success", simulation.Log);
        // The built-in store: a file store in state_dir, bucket "checkpoints"; the run is scoped to project 1.
        var stored = Path.Combine(workspace.Root, "state", "checkpoint-store", "checkpoints", "runs", "p1-telemetry-run", "telemetry", $"{jobId:D12}.gpu.csv");
        Assert.True(File.Exists(stored), simulation.Log);
        var storedLines = File.ReadAllLines(stored);
        var hostLines = File.ReadAllLines(Path.Combine(workspace.Root, "state", "telemetry", $"job-{jobId}", "gpu.csv"));
        Assert.True(storedLines.Length >= 2, string.Join('\n', storedLines));
        Assert.Equal(storedLines, hostLines.Take(storedLines.Length));
    }

    [Fact]
    public async Task The_samples_go_on_when_the_runner_dies_and_a_retry_adopts_the_training_and_end_with_the_adopters_cleanup()
    {
        using var workspace = ThreeGpuHost();
        object Training(long jobId) => new
        {
            job_id = jobId,
            name = "train",
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["GPU_COUNT"] = "2", ["CHECKPOINTS"] = "on" },
            script = new[] { "for i in $(seq 1 8); do echo \"step $i of 8\"; sleep 1; done" },
            timeout = 600,
        };

        // The first job's runner dies at step 3; its training, and its sampler, go on.
        await ReferenceTrainer.RunUntilTheRunnerDiesAsync(workspace, Training(7961), atStep: 3);
        Assert.True(SamplerRunning(7961), "the sampler ended with its job's runner");

        var retry = await workspace.SimulateAsync(Training(7962));

        Assert.True(retry.Result.Outcome == "success", retry.Log);
        Assert.Contains("This job adopts it", retry.Log);
        // The adopter reports the training's GPUs, from the samples its first job's sampler took.
        Assert.Contains("GPU usage", retry.Log);
        Assert.Equal(["GPU-t0", "GPU-t2"], UsageRow().Matches(retry.Log).Select(row => row.Groups["uuid"].Value).Order());
        Assert.False(File.Exists(Path.Combine(workspace.Root, "state", "telemetry", "job-7962", "gpu.csv")), "the adopter sampled GPUs it never held");
        await AssertSamplerEndsAsync(7961, "the adopted training's sampler outlived the adopter's cleanup");
    }

    private static bool SamplerRunning(long jobId) =>
        Directory.GetDirectories("/proc").Any(directory =>
            int.TryParse(Path.GetFileName(directory), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && DetachedVerbs.Runs(pid, "gpus", "sample", jobId));

    /// <summary>Cleanup removed the container: the sampler ends within a few intervals.</summary>
    private static async Task AssertSamplerEndsAsync(long jobId, string because)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (SamplerRunning(jobId) && DateTime.UtcNow < deadline)
            await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.False(SamplerRunning(jobId), because);
    }
}
