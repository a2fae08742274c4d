using System.Text.Json;
using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The stop sequence end to end (issue 11): a trainer whose save on the signal takes seconds
/// (Trainers/slow-save.sh: 3 s of sleep, then 150 MB written, renamed and marked) is stopped by
/// the deadline's signal, a cancel and the runner's timeout, on the built-in store and on s3rver.
/// Each time the committed generation must hold exactly what it saved on the signal, its save
/// lines must be in the job log, and the next job must resume from it.
/// </summary>
public sealed partial class StopSequenceTests
{
    public enum Stop { Deadline, Cancel, RunnerTimeout }

    private sealed record Setup(ExecutorWorkspace Workspace, string RunKey);

    private static async Task<Setup> SetUpAsync(bool s3, int stopGraceSeconds, string checkpointsConfig = "")
    {
        var runName = "slow-save-" + Guid.NewGuid().ToString("N")[..8];
        var store = "";
        if (s3)
        {
            using (var client = S3Testbed.Client())
                await S3Testbed.CreateBucketAsync(client, runName);
            store = S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{runName}\"") + $"\n[checkpoints]\nstore = \"s3\"\nbucket = \"{runName}\"\n";
        }
        else
            store = "[checkpoints]\n";
        var workspace = new ExecutorWorkspace(stopGraceSeconds: stopGraceSeconds, extraConfig: store + checkpointsConfig);
        var trainer = Directory.CreateDirectory(Path.Combine(workspace.Root, "trainer")).FullName;
        File.Copy(Path.Combine(Testbed.RepositoryRoot, "tests", "GpuExecutor.IntegrationTests", "Trainers", "slow-save.sh"), Path.Combine(trainer, "slow-save.sh"));
        return new Setup(workspace, runName);
    }

    private static object Job(long jobId, string runName, Dictionary<string, string> variables, int timeoutSeconds) => new
    {
        job_id = jobId,
        name = "train",
        image = Testbed.TestImage,
        sources = "trainer",
        variables = new Dictionary<string, string>(variables) { ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = runName },
        // In the background, as a script that forwards signals does: the stage's shell then ends
        // on the signal at once (a trapped signal interrupts `wait`), long before the trainer has
        // saved. The stage's reply is not the end of its processes.
        script = new[] { "./slow-save.sh & wait $!" },
        timeout = timeoutSeconds,
    };

    /// <summary>The file's SHA-256 in the run's newest committed generation, read from the store by the admin verbs.</summary>
    private static async Task<(long Generation, string? Sha256)> CommittedAsync(ExecutorWorkspace workspace, string runName, string path)
    {
        // The simulated project is 1: run keys are scoped to it.
        var run = "p1-" + runName;
        var listing = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "checkpoints", "list", run);
        Assert.True(listing.ExitCode == 0, listing.Stderr);
        var latest = LatestLine().Match(listing.Stdout);
        Assert.True(latest.Success, $"no LATEST generation for {run}:\n{listing.Stdout}");
        var generation = long.Parse(latest.Groups[1].Value);
        var shown = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "checkpoints", "show", run, generation.ToString());
        Assert.True(shown.ExitCode == 0, shown.Stderr);
        using var manifest = JsonDocument.Parse(shown.Stdout);
        var file = manifest.RootElement.GetProperty("files").EnumerateArray().FirstOrDefault(entry => entry.GetProperty("path").GetString() == path);
        return (generation, file.ValueKind == JsonValueKind.Undefined ? null : file.GetProperty("sha256").GetString());
    }

    [Theory]
    [InlineData(Stop.Deadline, false)]
    [InlineData(Stop.Deadline, true)]
    [InlineData(Stop.Cancel, false)]
    [InlineData(Stop.Cancel, true)]
    [InlineData(Stop.RunnerTimeout, false)]
    [InlineData(Stop.RunnerTimeout, true)]
    public async Task What_the_trainer_saves_on_the_stop_signal_is_committed_whole_and_the_next_job_resumes_from_it(Stop stop, bool s3)
    {
        // The deadline's signal comes 30 s before a 45 s timeout; the runner's timeout comes with
        // no margin (a 0 s margin leaves the deadline's signal behind the runner's SIGTERM).
        var margin = stop == Stop.Deadline ? 30 : 0;
        var (workspace, runName) = await SetUpAsync(s3, stopGraceSeconds: 25, $"deadline_margin_seconds = {margin}\nfinal_commit_wait_seconds = 60\n");
        using var _ = workspace;
        var variables = new Dictionary<string, string> { ["WEIGHTS_MB"] = "150" };
        var options = new List<string> { "--graceful-kill-timeout", "120" };
        if (stop == Stop.Cancel)
            options.AddRange(["--cancel-after", "6"]);
        var timeout = stop switch { Stop.Deadline => 45, Stop.RunnerTimeout => 15, _ => 600 };

        var first = await workspace.SimulateAsync(Job(9101, runName, variables, timeout), [.. options]);

        Assert.True(first.Result.Outcome == (stop switch { Stop.Deadline => "failed", Stop.Cancel => "canceled", _ => "timeout" }), first.Log);
        Assert.Contains(stop == Stop.Deadline ? "The job's deadline is near" : "Sending SIGTERM to the build_script process group", first.Log);
        Assert.Contains("signal received at step", first.Log);
        var saved = SavedLine().Match(first.Log);
        Assert.True(saved.Success, $"the trainer's save on the signal is not in the job log:\n{first.Log}");
        var (generation, committed) = await CommittedAsync(workspace, runName, "weights.bin");
        Assert.True(saved.Groups[1].Value == committed, $"generation {generation} holds weights {committed ?? "(none)"}, not the {saved.Groups[1].Value} saved on the signal:\n{first.Log}");
        // The trainer's output up to its exit, then what was committed.
        var committedLine = first.Log.IndexOf($"Checkpoint: generation {generation} is the newest in the store: 2 files, 150.0 MiB", StringComparison.Ordinal);
        Assert.True(committedLine > saved.Index, $"no line saying generation {generation} was committed after the trainer's save:\n{first.Log}");

        var next = await workspace.SimulateAsync(Job(9102, runName, new Dictionary<string, string> { ["RESUME_ONLY"] = "1" }, 600));
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Contains($"resumed with weights sha256 {committed} (generation {generation})", next.Log);
    }

    [Fact]
    public async Task A_markerless_trainer_killed_mid_write_past_the_grace_never_has_its_torn_file_committed()
    {
        var (workspace, runName) = await SetUpAsync(s3: false, stopGraceSeconds: 3, "quiet_seconds = 2\n");
        using var _ = workspace;

        var first = await workspace.SimulateAsync(Job(9201, runName, new Dictionary<string, string> { ["SAVE_MODE"] = "torn", ["WEIGHTS_MB"] = "4" }, 600), "--cancel-after", "8");

        Assert.True(first.Result.Outcome == "canceled", first.Log);
        var written = WrittenLine().Match(first.Log);
        Assert.True(written.Success, first.Log);
        Assert.Contains("rewriting the weights in place", first.Log);
        Assert.Contains("still running after 3 s: sending SIGKILL", first.Log);
        // The weights the quiet rule committed before the stop stay the newest; the torn rewrite is not committed.
        var (generation, committed) = await CommittedAsync(workspace, runName, "weights.bin");
        Assert.Equal(written.Groups[1].Value, committed);
        Assert.Contains($"Checkpoint: the changes since generation {generation} were not committed: the trainer was SIGKILLed after the grace period, so a file may be torn", first.Log);

        var next = await workspace.SimulateAsync(Job(9202, runName, new Dictionary<string, string> { ["RESUME_ONLY"] = "1" }, 600));
        Assert.Contains($"resumed with weights sha256 {committed} (generation {generation})", next.Log);
    }

    [GeneratedRegex(@"saved on the signal: weights sha256 ([0-9a-f]{64})")]
    private static partial Regex SavedLine();

    [GeneratedRegex(@"wrote weights sha256 ([0-9a-f]{64})")]
    private static partial Regex WrittenLine();

    [GeneratedRegex(@"^\s*([0-9]+) .*<- LATEST", RegexOptions.Multiline)]
    private static partial Regex LatestLine();
}
