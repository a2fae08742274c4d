using GpuExecutor.Checkpoints;
using GpuExecutor.Containers;
using GpuExecutor.Storage;
using GpuExecutor.Tests.Fakes;

namespace GpuExecutor.Tests;

/// <summary>
/// The checkpoint agent always ends (issue 19), against a container driver in memory whose daemon
/// can stop answering, and a real file store.
/// </summary>
public sealed class AgentLifeTests : IDisposable
{
    private const long JobId = 77;
    private const string Container = "gpu-executor-77-job";
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-agent").FullName;
    private readonly FakeContainerDriver _driver = new();
    private readonly List<string> _log = [];
    private readonly RunDirectories _directories;
    private readonly FileObjectStore _store;

    public AgentLifeTests()
    {
        _directories = RunDirectories.For(_root, "run-agent");
        Directory.CreateDirectory(_directories.Work);
        _store = new FileObjectStore(Path.Combine(_root, "store"));
        Directory.CreateDirectory(Path.Combine(_root, "store", "checkpoints"));
    }

    public void Dispose()
    {
        _store.Dispose();
        _driver.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private void AddContainer(DateTimeOffset deadline) =>
        _driver.Add(Container, new Dictionary<string, string>
        {
            [JobLabels.Managed] = "true",
            [JobLabels.JobId] = JobId.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [JobLabels.Deadline] = deadline.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
        });

    private void SaveCheckpoint(string content)
    {
        File.WriteAllText(Path.Combine(_directories.Work, "model.bin"), content);
        File.WriteAllText(Path.Combine(_directories.Work, CheckpointPaths.CompleteMarker), "");
    }

    private Task RunAgentAsync(TimeSpan daemonLostAfter, CancellationToken cancellationToken, TrainingLease? lease = null, Func<bool>? nobodyFollows = null, TimeSpan? stopGrace = null)
    {
        var timing = new AgentTiming(QuietPeriod: TimeSpan.Zero, PollInterval: TimeSpan.FromMilliseconds(50), KeepGenerations: 3)
        {
            DaemonLostAfter = daemonLostAfter,
            EndAfterDeadline = TimeSpan.FromHours(1),
            StopGrace = stopGrace ?? TimeSpan.FromMilliseconds(200),
            StopBeforeDeadline = TimeSpan.FromMinutes(5),
        };
        var repository = new CheckpointRepository(_store, "checkpoints", "", "run-agent", _ => { });
        return new CheckpointAgent(JobId, Container, _driver, repository, _directories, timing, line => { lock (_log) _log.Add(line); }, lease: lease, nobodyFollows: nobodyFollows)
            .RunAsync(cancellationToken);
    }

    private async Task<long?> LatestAsync() =>
        await new CheckpointRepository(_store, "checkpoints", "", "run-agent", _ => { }).ReadLatestAsync(TestContext.Current.CancellationToken);

    private async Task WaitForAsync(Func<bool> condition, string what)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!condition() && waited.Elapsed < TimeSpan.FromSeconds(20))
            await Task.Delay(20, TestContext.Current.CancellationToken);
        Assert.True(condition(), $"timed out waiting for {what}; the agent said: {string.Join(" | ", _log)}");
    }

    [Fact]
    public async Task With_the_daemon_gone_for_good_the_agent_commits_what_is_complete_and_ends_saying_why()
    {
        AddContainer(DateTimeOffset.UtcNow.AddHours(1));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var agent = RunAgentAsync(TimeSpan.FromSeconds(1), limit.Token);
        await WaitForAsync(() => CheckpointAgent.ReadStatus(_directories, JobId)?.Deadline is not null, "the agent to read the container's labels");

        _driver.Unreachable = true;
        SaveCheckpoint("saved while the daemon was down");
        await agent;

        Assert.Equal(1, await LatestAsync());
        Assert.Contains(_log, line => line.StartsWith("agent done: the Docker daemon has not answered for", StringComparison.Ordinal));
        Assert.True(CheckpointAgent.ReadStatus(_directories, JobId)!.Exited);
    }

    [Fact]
    public async Task A_daemon_back_before_the_bound_changes_nothing_and_the_agent_ends_with_its_container()
    {
        AddContainer(DateTimeOffset.UtcNow.AddHours(1));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var agent = RunAgentAsync(TimeSpan.FromMinutes(10), limit.Token);

        _driver.Unreachable = true;
        await WaitForAsync(() => _log.Any(line => line.StartsWith("the Docker daemon does not answer", StringComparison.Ordinal)), "the agent to notice the daemon");
        _driver.Unreachable = false;
        await WaitForAsync(() => _log.Any(line => line.StartsWith("the Docker daemon answers again", StringComparison.Ordinal)), "the agent to see the daemon back");
        SaveCheckpoint("after the restart");
        await WaitForAsync(() => CheckpointAgent.ReadStatus(_directories, JobId)?.CommittedGeneration == 1, "the commit after the restart");
        Assert.False(agent.IsCompleted);

        await _driver.RemoveAsync(Container, TestContext.Current.CancellationToken);
        await agent;
        Assert.Contains(_log, line => line == $"agent done: the job's container {Container} is gone");
    }

    [Fact]
    public async Task Past_its_jobs_deadline_and_the_grace_the_agent_ends_even_with_the_container_still_there()
    {
        AddContainer(DateTimeOffset.UtcNow.AddHours(-2));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        await RunAgentAsync(TimeSpan.FromMinutes(10), limit.Token);

        Assert.Contains(_log, line => line.StartsWith("agent done: the job's deadline plus cleanup.gc_grace_seconds passed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_training_no_runner_follows_is_stopped_before_its_jobs_deadline_and_what_it_saves_on_the_signal_is_committed()
    {
        // Four minutes to the deadline, within the five-minute margin; its runner died.
        AddContainer(DateTimeOffset.UtcNow.AddMinutes(4));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var agent = RunAgentAsync(TimeSpan.FromMinutes(10), limit.Token, nobodyFollows: () => true, stopGrace: TimeSpan.FromSeconds(2));

        // The trainer saves on the signal, as on any stop.
        await WaitForAsync(() => !_driver.Signals.IsEmpty, "the stop signal");
        SaveCheckpoint("saved on the signal");
        await agent;

        Assert.Equal([(Container, "TERM")], _driver.Signals);
        Assert.Contains(_log, line => line.StartsWith($"no runner follows the training in {Container}", StringComparison.Ordinal));
        Assert.Equal(1, await LatestAsync());
        Assert.Contains(Container, _driver.Removed);
        Assert.Equal("no runner followed the training at its job's deadline; it was stopped after its save", CheckpointAgent.ReadStatus(_directories, JobId)!.EndReason);
    }

    [Fact]
    public async Task A_training_its_runner_follows_is_left_to_that_runner_at_the_deadline()
    {
        AddContainer(DateTimeOffset.UtcNow.AddMinutes(4));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var agent = RunAgentAsync(TimeSpan.FromMinutes(10), limit.Token, nobodyFollows: () => false);
        await WaitForAsync(() => CheckpointAgent.ReadStatus(_directories, JobId)?.Deadline is not null, "the agent to read the container's labels");
        await Task.Delay(300, TestContext.Current.CancellationToken);

        Assert.Empty(_driver.Signals);
        Assert.False(agent.IsCompleted);
        await _driver.RemoveAsync(Container, TestContext.Current.CancellationToken);
        await agent;
    }

    private TrainingLease Lease(string host) =>
        new(new CheckpointRepository(_store, "checkpoints", "", "run-agent", _ => { }), host, TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(30), _ => { });

    [Fact]
    public async Task An_agent_whose_lease_another_host_took_commits_nothing_more_stops_the_training_and_ends()
    {
        AddContainer(DateTimeOffset.UtcNow.AddHours(1));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var agent = RunAgentAsync(TimeSpan.FromMinutes(10), limit.Token, Lease("host-a"));
        SaveCheckpoint("while holding the lease");
        await WaitForAsync(() => CheckpointAgent.ReadStatus(_directories, JobId)?.CommittedGeneration == 1, "the first commit");
        Assert.Equal(JobId, (await Lease("host-a").ReadAsync(TestContext.Current.CancellationToken))!.JobId);

        // Host B's job found the lease expired (this host was cut off from the store) and took it.
        var now = DateTimeOffset.UtcNow;
        await new CheckpointRepository(_store, "checkpoints", "", "run-agent", _ => { }).WriteRunRecordAsync(
            TrainingLease.RecordName,
            System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new { host = "host-b", job_id = 99, container = "gpu-executor-99-job", acquired_at = now, renewed_at = now, expires_at = now.AddMinutes(2) }),
            TestContext.Current.CancellationToken);
        await agent;

        Assert.Contains(_log, line => line.StartsWith("LEASE LOST: the run's lease was taken by job 99 on host host-b", StringComparison.Ordinal));
        Assert.Equal([(Container, "TERM")], _driver.Signals);
        Assert.Contains(Container, _driver.Removed);
        var status = CheckpointAgent.ReadStatus(_directories, JobId)!;
        Assert.Equal("job 99 on host host-b", status.LeaseLostTo);
        Assert.True(status.Exited);
        Assert.Equal(1, await LatestAsync());
        Assert.Equal(99, (await Lease("host-b").ReadAsync(TestContext.Current.CancellationToken))!.JobId);
    }

    [Fact]
    public async Task An_agent_releases_its_lease_when_it_ends_with_its_container()
    {
        AddContainer(DateTimeOffset.UtcNow.AddHours(1));
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var agent = RunAgentAsync(TimeSpan.FromMinutes(10), limit.Token, Lease("host-a"));
        await WaitForAsync(() => File.Exists(_directories.AgentStatus(JobId)), "the agent to start");
        await Task.Delay(300, TestContext.Current.CancellationToken);

        await _driver.RemoveAsync(Container, TestContext.Current.CancellationToken);
        await agent;

        var lease = await Lease("host-a").ReadAsync(TestContext.Current.CancellationToken);
        Assert.Equal(JobId, lease!.JobId);
        Assert.NotNull(lease.ReleasedAt);
    }
}

public sealed class OrphanedAgentTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-orphans").FullName;

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);

    /// <summary>An agent's status file, as the agent writes it.</summary>
    private void WriteStatus(string run, long jobId, int pid, bool exited, DateTimeOffset? deadline)
    {
        var directories = RunDirectories.For(_stateDir, run);
        Directory.CreateDirectory(directories.Root);
        File.WriteAllText(directories.AgentStatus(jobId), System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["job_id"] = jobId, ["uploaded_bytes"] = 0, ["total_bytes"] = 0, ["final_pass_done"] = 0,
            ["exited"] = exited, ["pid"] = pid, ["deadline"] = deadline,
        }));
        Assert.Equal(pid, CheckpointAgent.ReadStatus(directories, jobId)?.Pid);
    }

    [Fact]
    public async Task Gc_stops_an_agent_that_said_it_exited_or_outlived_its_deadline_and_leaves_other_processes_alone()
    {
        // Stand-ins with an agent's command line: "... checkpoints agent JOB ...".
        using var saidExited = System.Diagnostics.Process.Start("bash", ["-c", "sleep 60; true", "checkpoints", "agent", "55", "run-a"])!;
        using var pastDeadline = System.Diagnostics.Process.Start("bash", ["-c", "sleep 60; true", "checkpoints", "agent", "56", "run-b"])!;
        using var live = System.Diagnostics.Process.Start("bash", ["-c", "sleep 60; true", "checkpoints", "agent", "57", "run-c"])!;
        try
        {
            var now = DateTimeOffset.UtcNow;
            WriteStatus("run-a", 55, saidExited.Id, exited: true, deadline: null);
            WriteStatus("run-b", 56, pastDeadline.Id, exited: false, deadline: now.AddHours(-3));
            WriteStatus("run-c", 57, live.Id, exited: false, deadline: now.AddHours(1));
            // A status whose pid is some other process (this one): never touched.
            WriteStatus("run-d", 58, Environment.ProcessId, exited: true, deadline: null);

            var orphans = OrphanedAgents.Find(_stateDir, TimeSpan.FromHours(1), now);
            foreach (var orphan in orphans)
                OrphanedAgents.Stop(orphan);

            Assert.Equal([55L, 56L], orphans.Select(orphan => orphan.JobId).Order());
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await saidExited.WaitForExitAsync(limit.Token);
            await pastDeadline.WaitForExitAsync(limit.Token);
            Assert.False(live.HasExited);
        }
        finally
        {
            foreach (var process in new[] { saidExited, pastDeadline, live })
            {
                if (!process.HasExited)
                    process.Kill();
            }
        }
    }
}
