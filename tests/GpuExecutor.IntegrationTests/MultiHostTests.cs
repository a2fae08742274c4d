using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// A fleet of two hosts on this machine (issue 13): two private dockerds, each with its own
/// executor config, state directory and host_name, sharing the test bed's s3rver as their
/// checkpoint store. One trainer per run across them, and a run that survives losing its host.
/// </summary>
public sealed partial class MultiHostTests
{
    private const string RunKey = "fleet-run";
    private readonly string _bucket = "fleet-" + Guid.NewGuid().ToString("N")[..8];

    public MultiHostTests()
    {
        using var client = S3Testbed.Client();
        S3Testbed.CreateBucketAsync(client, _bucket).GetAwaiter().GetResult();
    }

    private ExecutorWorkspace Host(PrivateDaemon daemon, string name, int leaseWaitSeconds)
    {
        var workspace = new ExecutorWorkspace(dockerEndpoint: daemon.Endpoint, hostName: name, stopGraceSeconds: 10, extraConfig: $"""
            {S3Testbed.StoreConfig("shared", S3Testbed.Endpoint, $"\"{_bucket}\"")}
            [checkpoints]
            store = "shared"
            bucket = "{_bucket}"
            lease_ttl_seconds = 8
            lease_clock_skew_seconds = 2
            lease_wait_seconds = {leaseWaitSeconds}
            agent_daemon_lost_seconds = 20
            """);
        return ReferenceTrainer.CopyInto(workspace);
    }

    private static void SetLeaseWait(ExecutorWorkspace host, int seconds) =>
        File.WriteAllText(host.ConfigPath, LeaseWaitLine().Replace(File.ReadAllText(host.ConfigPath), $"lease_wait_seconds = {seconds}"));

    private static object TrainerJob(long jobId, int totalSteps) => ReferenceTrainer.Job(jobId, totalSteps, RunKey);

    private static string RunDirectory(ExecutorWorkspace host) => Directory.GetDirectories(Path.Combine(host.Root, "state", "checkpoints")).Single();

    [Fact]
    public async Task A_job_of_the_run_on_another_host_waits_for_the_live_lease_and_after_that_host_dies_takes_over_from_its_newest_commit()
    {
        await using var daemonA = await PrivateDaemon.StartAsync();
        await using var daemonB = await PrivateDaemon.StartAsync();
        using var hostA = Host(daemonA, "host-a", leaseWaitSeconds: 5);
        using var hostB = Host(daemonB, "host-b", leaseWaitSeconds: 5);

        var linesOfA = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var training = await ReferenceTrainer.StartUntilAsync(hostA, TrainerJob(9101, 100_000), ReferenceTrainer.CheckpointLine(), 20, linesOfA);

        // While host A trains, host B's job of the run waits for A's lease, names it, and fails.
        var refused = await hostB.SimulateAsync(TrainerJob(9102, 100_000));
        Assert.True(refused.Result.Outcome == "system_failure", refused.Log);
        Assert.Matches(@"run 'p\d+-fleet-run' is being trained by job 9101 on host host-a \(container gpu-executor-9101-job\)", refused.Log);
        Assert.Contains("waited 5 s (checkpoints.lease_wait_seconds)", refused.Log);
        Assert.DoesNotContain("resumed at step", refused.Log);

        // Host A dies: every process of its executor (the runner's simulator, `run`, the agent),
        // its dockerd with every container, and its state directory.
        var agentLog = File.ReadAllText(Path.Combine(RunDirectory(hostA), "agent-9101.log"));
        await daemonA.LoseAsync(hostA.Root);
        await Assert.ThrowsAnyAsync<Exception>(() => training);
        Directory.Delete(Path.Combine(hostA.Root, "state"), recursive: true);
        var savedOnA = ReferenceTrainer.Numbers(ReferenceTrainer.CheckpointLine(), string.Join("\n", linesOfA));

        // The retry on host B waits for A's lease to expire, takes the run over, and resumes from
        // A's newest commit: at most one checkpoint interval of A's training is lost.
        SetLeaseWait(hostB, 60);
        var retry = await hostB.SimulateAsync(TrainerJob(9103, savedOnA[^1] + 20));
        Assert.True(retry.Result.Outcome == "success", retry.Log);
        Assert.Contains("run lease taken over from job 9101 on host host-a, whose lease expired", retry.Log);
        Assert.Matches(@"restored generation \d+ \(committed [0-9: -]+ UTC by job 9101 on host host-a\)", retry.Log);
        var resumedAt = int.Parse(ReferenceTrainer.ResumedLine().Match(retry.Log).Groups[1].Value);
        Assert.Contains(resumedAt, savedOnA);
        Assert.True(resumedAt >= savedOnA[Math.Max(0, savedOnA.Count - 3)], $"resumed at step {resumedAt}, but host A saved {string.Join(", ", savedOnA)}; its agent said:\n{agentLog}");
        Assert.Contains("training complete", retry.Log);

        // The run's story, read from the store: both hosts' segments, and who committed what.
        var story = await hostB.CallVerbAsync(new Dictionary<string, string?>(), "runs", "show", Path.GetFileName(RunDirectory(hostB)));
        Assert.True(story.ExitCode == 0, story.Stdout + story.Stderr);
        TestContext.Current.SendDiagnosticMessage(story.Stdout);
        // Host A's job never said how it ended (it died with its host), and no agent outlived it.
        Assert.Matches(@"9101 host-a +[0-9: -]+ +\(unknown\)", story.Stdout);
        // Dated by its last commit while B's commits have not yet pruned it.
        Assert.Matches(@"9101 host-a .+ it never said how it ended \(its host or runner died\); (its last commit was at [0-9: -]+ UTC|none of its generations is kept)", story.Stdout);
        Assert.Matches(@"9103 host-b +[0-9: -]+ +[0-9: -]+ +success", story.Stdout);
        Assert.Contains("lease taken over from job 9101 on host host-a, whose lease expired", story.Stdout);
        Assert.Contains($"resumed from generation", story.Stdout);
        // Host A's generations were retained out by B's commits (keep_generations = 3).
        Assert.Matches(@"\d+ [0-9: -]+ +9103 host-b", story.Stdout);
        Assert.Matches(@"training time so far: .+ in 2 segments", story.Stdout);
    }

    [GeneratedRegex(@"lease_wait_seconds = \d+")]
    private static partial Regex LeaseWaitLine();
}
