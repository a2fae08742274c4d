using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// A checkpoint agent whose Docker daemon goes away (issue 19), on a second, private dockerd that
/// the test stops under a running job: scripts/testbed.sh daemon-start and daemon-stop, as for the
/// test bed's own. GPU_EXECUTOR_LONG_TESTS=1 runs the outage for 10 minutes instead of 20 s.
/// </summary>
public sealed partial class DaemonLossTests
{
    private static bool Long => Environment.GetEnvironmentVariable("GPU_EXECUTOR_LONG_TESTS") == "1";

    private static ExecutorWorkspace Workspace(PrivateDaemon daemon, int daemonLostSeconds) =>
        // `run` does not wait for the daemon here: these tests are about the agent, alone with it.
        ReferenceTrainer.CopyInto(new ExecutorWorkspace(dockerEndpoint: daemon.Endpoint, daemonReconnectSeconds: 0, extraConfig: $"[checkpoints]\nagent_daemon_lost_seconds = {daemonLostSeconds}"));

    private static object TrainerJob(long jobId, int totalSteps) => ReferenceTrainer.Job(jobId, totalSteps);

    /// <summary>Starts the job and returns once its trainer has checkpointed at <paramref name="step"/> or later.</summary>
    private static Task<Task<ExecutorWorkspace.Simulation>> StartUntilCheckpointAsync(ExecutorWorkspace workspace, object job, int step) =>
        ReferenceTrainer.StartUntilAsync(workspace, job, ReferenceTrainer.CheckpointLine(), step);

    private static string RunDirectory(ExecutorWorkspace workspace) =>
        System.IO.Directory.GetDirectories(Path.Combine(workspace.Root, "state", "checkpoints")).Single();

    private static int AgentPid(string runDirectory, long jobId) =>
        GpuExecutor.Checkpoints.CheckpointAgent.ReadStatus(new GpuExecutor.Checkpoints.RunDirectories(runDirectory), jobId)?.Pid
            ?? throw new Xunit.Sdk.XunitException($"job {jobId}'s agent wrote no status in {runDirectory}");

    /// <summary>Waits, up to <paramref name="limit"/>, until the agent's log holds <paramref name="text"/>; returns the log.</summary>
    private static async Task<string> WaitForAgentLogAsync(string agentLog, string text, TimeSpan limit)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!File.ReadAllText(agentLog).Contains(text, StringComparison.Ordinal) && waited.Elapsed < limit)
            await Task.Delay(200, TestContext.Current.CancellationToken);
        return File.ReadAllText(agentLog);
    }

    private static (int Descriptors, long RssKiB) Sample(int pid)
    {
        var descriptors = System.IO.Directory.GetFiles($"/proc/{pid}/fd").Length;
        var rss = File.ReadLines($"/proc/{pid}/status").First(line => line.StartsWith("VmRSS:", StringComparison.Ordinal));
        return (descriptors, long.Parse(rss.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]));
    }

    [Fact]
    public async Task An_agent_whose_daemon_never_comes_back_commits_the_last_checkpoint_and_ends_within_the_bound_with_flat_descriptors_and_memory()
    {
        var bound = Long ? 600 : 20;
        await using var daemon = await PrivateDaemon.StartAsync();
        using var workspace = Workspace(daemon, bound);

        var first = await StartUntilCheckpointAsync(workspace, TrainerJob(8801, 100_000), step: 20);
        var runDirectory = RunDirectory(workspace);
        var agent = AgentPid(runDirectory, 8801);
        await daemon.StopWithContainersAsync();
        var outage = System.Diagnostics.Stopwatch.StartNew();
        await first;

        var samples = new List<(int Descriptors, long RssKiB)>();
        while (OrphanProbe.IsAlive(agent) && outage.Elapsed < TimeSpan.FromSeconds(bound + 60))
        {
            try
            {
                samples.Add(Sample(agent));
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException or InvalidOperationException)
            {
                // It exited between the look and the read.
            }
            await Task.Delay(1000, TestContext.Current.CancellationToken);
        }

        var agentLog = await File.ReadAllTextAsync(Path.Combine(runDirectory, "agent-8801.log"), TestContext.Current.CancellationToken);
        Assert.False(OrphanProbe.IsAlive(agent), $"the agent still runs {outage.Elapsed.TotalSeconds:0} s into the outage:\n{agentLog}");
        Assert.True(outage.Elapsed < TimeSpan.FromSeconds(bound + 30), $"the agent took {outage.Elapsed.TotalSeconds:0} s to end, against a bound of {bound} s");
        Assert.Contains("agent done: the Docker daemon has not answered for", agentLog);
        Assert.True(samples.Count >= bound / 2, $"only {samples.Count} samples of the agent");
        var (firstDescriptors, firstRss) = samples[0];
        var report = $"agent during a {bound} s outage, {samples.Count} samples: descriptors {firstDescriptors} -> max {samples.Max(sample => sample.Descriptors)}, RSS {firstRss} KiB -> max {samples.Max(sample => sample.RssKiB)} KiB";
        // For the record (the issue asks for both figures): beside the published binary.
        var reports = System.IO.Directory.CreateDirectory(Path.Combine(Testbed.RepositoryRoot, "artifacts", "test-reports")).FullName;
        await File.WriteAllTextAsync(Path.Combine(reports, "daemon-loss-agent.txt"), report + "\n" + string.Join("\n", samples.Select((sample, second) => $"{second} s: {sample.Descriptors} descriptors, {sample.RssKiB} KiB")) + "\n", TestContext.Current.CancellationToken);
        Assert.True(samples.Max(sample => sample.Descriptors) - firstDescriptors <= 4, report);
        Assert.True(samples.Max(sample => sample.RssKiB) - firstRss <= 16 * 1024, report);

        // The host's daemon back (a fresh one: its containers are gone), the run's next job
        // restores the agent's last commit at once: the agent's lock is free.
        await daemon.StartAgainAsync();
        var committed = LastCommitted().Matches(agentLog).Select(match => int.Parse(match.Groups[1].Value)).Last();
        var next = await workspace.SimulateAsync(TrainerJob(8802, 1));
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Contains($"restored generation {committed} ", next.Log);
        Assert.DoesNotContain("still committing; waiting", next.Log);
        // That job's agent ends with its container, before this host's daemon goes away for good.
        var nextAgentLog = await WaitForAgentLogAsync(Path.Combine(runDirectory, "agent-8802.log"), "agent done", TimeSpan.FromSeconds(30));
        Assert.Contains("agent done: the job's container gpu-executor-8802-job is gone", nextAgentLog);
    }

    [Fact]
    public async Task An_agent_whose_daemon_comes_back_within_the_bound_carries_on_committing()
    {
        await using var daemon = await PrivateDaemon.StartAsync();
        using var workspace = Workspace(daemon, 120);

        var job = await StartUntilCheckpointAsync(workspace, TrainerJob(8811, 100_000), step: 20);
        var runDirectory = RunDirectory(workspace);
        var agentLog = Path.Combine(runDirectory, "agent-8811.log");
        await daemon.StopDaemonOnlyAsync();
        // The job's run loses its attachment and the job fails; the training goes on in its
        // container (live-restore), and so does the agent, which cannot reach the daemon.
        await job;
        Assert.Contains("the Docker daemon does not answer", await WaitForAgentLogAsync(agentLog, "the Docker daemon does not answer", TimeSpan.FromSeconds(30)));

        await daemon.StartAgainAsync();
        var before = LastCommitted().Matches(File.ReadAllText(agentLog)).Count;
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!(File.ReadAllText(agentLog).Contains("the Docker daemon answers again", StringComparison.Ordinal)
                 && LastCommitted().Matches(File.ReadAllText(agentLog)).Count > before + 1) && waited.Elapsed < TimeSpan.FromSeconds(60))
            await Task.Delay(200, TestContext.Current.CancellationToken);
        var log = File.ReadAllText(agentLog);
        Assert.Contains("the Docker daemon answers again", log);
        Assert.True(LastCommitted().Matches(log).Count > before + 1, $"no commits after the daemon came back:\n{log}");
        Assert.DoesNotContain("agent done", log);

        // Its container removed at last (as cleanup or gc would), it ends.
        await daemon.DockerAsync("rm", "-f", "gpu-executor-8811-job", "gpu-executor-8811-helper");
        Assert.Contains("agent done: the job's container gpu-executor-8811-job is gone", await WaitForAgentLogAsync(agentLog, "agent done", TimeSpan.FromSeconds(30)));
    }

    [GeneratedRegex(@"committed generation (\d+)")]
    private static partial Regex LastCommitted();
}

internal static class OrphanProbe
{
    public static bool IsAlive(int pid) => Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);
}
