using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using GpuExecutor.Simulation;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The compressed long run (issue 13): one 300-step run of the reference trainer stands in for
/// a 300-hour training, across two hosts (two private dockerds, host A with live-restore and
/// host B without) that share one s3rver store, with continuation on against the fake GitLab.
/// Ten interruptions, one of each kind, hit it at points drawn from a fixed seed; the test plays
/// GitLab, retrying each job that ended, and no one else acts. Judged from the trainers' own
/// step timelines on both hosts: the step counter never goes back except after host loss or a
/// fallback past a corrupt generation (and then to one of the trainer's checkpoints, at most one commit interval back), no
/// two trainers of the run ever ran at once, and every job ends in the class expected of it.
/// </summary>
public sealed partial class LongRunTests
{
    private const int Seed = 20261130;
    private const int TotalSteps = 300;
    private const double StepSeconds = 0.5;
    private const int DeadlineMarginSeconds = 10;
    private const int StoreOutageSeconds = 60;
    private const int CheckpointEverySeconds = 1;

    /// <summary>Prepare's share of a short timeout: the lease, restore and containers, with room for a busy machine.</summary>
    private const int PrepareAllowanceSeconds = 15;

    /// <summary>The agent's part of a commit interval, in steps: its next poll (1 s) and the upload (1 s at most here).</summary>
    private static readonly int AgentSteps = (int)Math.Ceiling((1 + 1) / StepSeconds);

    /// <summary>
    /// One commit interval, in steps: from one of the trainer's checkpoints to the next (the
    /// largest gap it printed: bash's SECONDS counts whole seconds, so a 1 s interval runs up
    /// to 2 s), through the agent's poll, to the generation in the store. A lost host or a
    /// generation found bad costs at most this much training.
    /// </summary>
    private static int CommitIntervalSteps(IReadOnlyList<int> checkpoints) =>
        checkpoints.Zip(checkpoints.Skip(1), (earlier, later) => later - earlier).DefaultIfEmpty((int)Math.Ceiling(CheckpointEverySeconds / StepSeconds)).Max() + AgentSteps;
    private const string Token = "glpat-long-run-5521";
    private const string RunName = "long-run";
    private const string HostA = "host-a";
    private const string HostB = "host-b";

    public enum Interruption
    {
        Cancel,
        Deadline,
        RunnerKill,
        DaemonRestartWithLiveRestore,
        DaemonRestartWithoutLiveRestore,
        HostLoss,
        StoreOutage,
        AgentKill,
        CorruptNewestBlob,
        RetryWhileOrphanTrains,
    }

    private static bool EndsTheJob(Interruption kind) => kind is Interruption.Cancel or Interruption.Deadline or Interruption.RunnerKill
        or Interruption.DaemonRestartWithoutLiveRestore or Interruption.HostLoss or Interruption.RetryWhileOrphanTrains;

    /// <summary>The job before ended with the trainer's own save on a signal: its newest generation is the one to rot.</summary>
    private static bool SavesOnSignal(Interruption kind) => kind is Interruption.Cancel or Interruption.Deadline or Interruption.DaemonRestartWithoutLiveRestore;

    /// <param name="AfterSteps">How many steps after the previous interruption (or the job's first step) it hits.</param>
    public sealed record PlannedInterruption(Interruption Kind, int AfterSteps);

    /// <param name="After">How the job before it ended, and whether the newest blob rots before this one restores.</param>
    public sealed record PlannedJob(string Host, IReadOnlyList<PlannedInterruption> Interruptions, Interruption? After, bool CorruptBefore)
    {
        public Interruption? Ending => Interruptions.Count > 0 && EndsTheJob(Interruptions[^1].Kind) ? Interruptions[^1].Kind : null;
    }

    /// <summary>
    /// The schedule from the seed: the ten kinds in a random order, each a random number of steps
    /// after the one before. Orders the test bed cannot play are drawn again: a deadline or an
    /// orphan's short timeout must start the job and follow a job whose retry starts at once; a
    /// rotted blob must follow a job that saved on a signal (the newest generation is then known);
    /// and the host each job needs (live-restore on A, without it on B, the same host for a
    /// re-attach, the other for host loss and the orphan) must be possible.
    /// </summary>
    public static IReadOnlyList<PlannedJob> Plan(int seed)
    {
        var random = new Random(seed);
        for (var attempt = 0; attempt < 1_000_000; attempt++)
        {
            var order = Enum.GetValues<Interruption>().OrderBy(_ => random.Next()).ToList();
            var offsets = order.Select(_ => random.Next(4, 11)).ToList();
            if (TryPlan(order, offsets, random) is { } jobs)
                return jobs;
        }
        throw new InvalidOperationException($"seed {seed} gives no playable schedule");
    }

    private static List<PlannedJob>? TryPlan(List<Interruption> order, List<int> offsets, Random random)
    {
        var groups = new List<(List<PlannedInterruption> Interruptions, Interruption? After, bool CorruptBefore)>();
        var current = new List<PlannedInterruption>();
        Interruption? after = null;
        var corruptBefore = false;
        for (var index = 0; index < order.Count; index++)
        {
            var kind = order[index];
            if (kind == Interruption.CorruptNewestBlob)
            {
                if (index == 0 || !SavesOnSignal(order[index - 1]))
                    return null;
                corruptBefore = true;
                continue;
            }
            if (kind is Interruption.Deadline or Interruption.RetryWhileOrphanTrains && (current.Count > 0 || after is not (null or Interruption.Cancel or Interruption.Deadline or Interruption.DaemonRestartWithoutLiveRestore)))
                return null;
            current.Add(new PlannedInterruption(kind, offsets[index]));
            if (EndsTheJob(kind))
            {
                groups.Add((current, after, corruptBefore));
                (current, after, corruptBefore) = ([], kind, false);
            }
        }
        groups.Add((current, after, corruptBefore));

        var jobs = new List<PlannedJob>();
        foreach (var (interruptions, previousEnding, corrupt) in groups)
        {
            string? required = null;
            if (interruptions.Any(planned => planned.Kind == Interruption.DaemonRestartWithLiveRestore))
                required = HostA;
            if (interruptions.Any(planned => planned.Kind == Interruption.DaemonRestartWithoutLiveRestore))
            {
                if (required == HostA)
                    return null;
                required = HostB;
            }
            var previousHost = jobs.Count > 0 ? jobs[^1].Host : null;
            string? forced = previousEnding switch
            {
                Interruption.RunnerKill => previousHost,
                Interruption.HostLoss or Interruption.RetryWhileOrphanTrains => previousHost == HostA ? HostB : HostA,
                _ => null,
            };
            if (required is not null && forced is not null && required != forced)
                return null;
            jobs.Add(new PlannedJob(required ?? forced ?? (random.Next(2) == 0 ? HostA : HostB), interruptions, previousEnding, corrupt));
        }
        return jobs;
    }

    [Fact]
    public void The_seed_gives_one_of_each_interruption_in_a_playable_order()
    {
        var jobs = Plan(Seed);

        Assert.Equal(Enum.GetValues<Interruption>().Order(), jobs.SelectMany(job => job.Interruptions.Select(planned => planned.Kind)).Append(Interruption.CorruptNewestBlob).Order());
        Assert.Single(jobs, job => job.CorruptBefore);
        Assert.All(jobs.Where(job => job.Interruptions.Any(planned => planned.Kind == Interruption.DaemonRestartWithLiveRestore)), job => Assert.Equal(HostA, job.Host));
        Assert.All(jobs.Where(job => job.Ending == Interruption.DaemonRestartWithoutLiveRestore), job => Assert.Equal(HostB, job.Host));
        for (var index = 1; index < jobs.Count; index++)
        {
            if (jobs[index].After == Interruption.RunnerKill)
                Assert.Equal(jobs[index - 1].Host, jobs[index].Host);
            if (jobs[index].After is Interruption.HostLoss or Interruption.RetryWhileOrphanTrains)
                Assert.NotEqual(jobs[index - 1].Host, jobs[index].Host);
        }
        // Another seed, another order: the schedule is drawn, not fixed.
        Assert.NotEqual(Describe(jobs), Describe(Plan(Seed + 1)));
    }

    private static string Describe(IReadOnlyList<PlannedJob> jobs) => string.Join("\n", jobs.Select((job, index) =>
        $"job {index + 1} on {job.Host}{(job.CorruptBefore ? " (newest blob rotted before it)" : "")}: "
        + (job.Interruptions.Count == 0 ? "runs to the end" : string.Join(", ", job.Interruptions.Select(planned => $"{planned.Kind} after {planned.AfterSteps} steps")))));

    private sealed class Host(string name, PrivateDaemon daemon, ExecutorWorkspace workspace)
    {
        public string Name => name;
        public PrivateDaemon Daemon => daemon;
        public ExecutorWorkspace Workspace => workspace;
    }

    /// <summary>One job of the run under the simulator, as the runner on its host runs it.</summary>
    private sealed partial class RunningJob
    {
        private readonly Process _process;
        private readonly StringBuilder _log = new();
        private readonly Lock _lock = new();
        private readonly Task _reading;
        private readonly string _resultPath;
        private int _firstStep = -1;
        private int _lastStep = -1;
        private int _commits;

        private RunningJob(Host host, long jobId, Process process, string resultPath)
        {
            Host = host;
            JobId = jobId;
            _process = process;
            _resultPath = resultPath;
            process.ErrorDataReceived += (_, line) => Append(line.Data);
            process.BeginErrorReadLine();
            _reading = Task.Run(async () =>
            {
                while (await process.StandardOutput.ReadLineAsync() is { } line)
                    Append(line);
            });
        }

        public Host Host { get; }
        public long JobId { get; }
        public int FirstStep => Volatile.Read(ref _firstStep);
        public int LastStep => Volatile.Read(ref _lastStep);
        public int Commits => Volatile.Read(ref _commits);
        public bool HasExited => _process.HasExited;

        public string Log
        {
            get
            {
                lock (_lock)
                    return _log.ToString();
            }
        }

        private void Append(string? line)
        {
            if (line is null)
                return;
            lock (_lock)
                _log.AppendLine(line);
            if (ReferenceTrainer.StepLine().Match(line) is { Success: true } step)
            {
                var number = int.Parse(step.Groups[1].Value, CultureInfo.InvariantCulture);
                Interlocked.CompareExchange(ref _firstStep, number, -1);
                Volatile.Write(ref _lastStep, number);
            }
            if (CommitLine().IsMatch(line))
                Interlocked.Increment(ref _commits);
        }

        public static RunningJob Start(Host host, long jobId, int timeoutSeconds)
        {
            var job = new
            {
                job_id = jobId,
                name = "train",
                image = Testbed.TestImage,
                sources = "trainer",
                variables = new Dictionary<string, string>
                {
                    ["CHECKPOINTS"] = "on", ["CHECKPOINT_RUN_KEY"] = RunName, ["TOTAL_STEPS"] = TotalSteps.ToString(CultureInfo.InvariantCulture),
                    ["STEP_SECONDS"] = StepSeconds.ToString(CultureInfo.InvariantCulture), ["CHECKPOINT_EVERY_SECONDS"] = CheckpointEverySeconds.ToString(CultureInfo.InvariantCulture), ["STEP_TIMELINE"] = "timeline.txt",
                },
                script = new[] { "./trainer.sh" },
                timeout = timeoutSeconds,
            };
            var jobPath = Path.Combine(host.Workspace.Root, $"job-{jobId}.json");
            File.WriteAllText(jobPath, JsonSerializer.Serialize(job));
            var resultPath = jobPath + ".result.json";
            var start = new ProcessStartInfo(Testbed.Binary, ["--config", host.Workspace.ConfigPath, "simulate", jobPath, "--result", resultPath, "--prepare-retry-delay", "0.2", "--graceful-kill-timeout", "60"])
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = host.Workspace.Root,
            };
            return new RunningJob(host, jobId, Process.Start(start)!, resultPath);
        }

        public async Task WaitUntilAsync(Func<RunningJob, bool> condition, string what, TimeSpan limit)
        {
            var waited = Stopwatch.StartNew();
            while (!condition(this))
            {
                if (_process.HasExited && !condition(this))
                    throw new Xunit.Sdk.XunitException($"job {JobId} on {Host.Name} ended before {what}:\n{Log}");
                if (waited.Elapsed > limit)
                    throw new Xunit.Sdk.XunitException($"job {JobId} on {Host.Name}: no {what} within {limit.TotalSeconds:0} s:\n{Log}");
                await Task.Delay(50, TestContext.Current.CancellationToken);
            }
        }

        /// <summary>Like the Cancel button in GitLab: SIGTERM to the runner's simulator.</summary>
        public Task CancelAsync() => Testbed.RunAsync("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)], null, null);

        /// <summary>The runner crashes: the simulator and every executor process under it get SIGKILL.</summary>
        public async Task KillRunnerAsync()
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync(TestContext.Current.CancellationToken);
            await _reading;
        }

        /// <summary>The job's outcome as the simulator reports it, or "none" when its runner died with it.</summary>
        public async Task<string> FinishAsync(TimeSpan limit)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
            timeout.CancelAfter(limit);
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                throw new Xunit.Sdk.XunitException($"job {JobId} on {Host.Name} did not end within {limit.TotalSeconds:0} s:\n{Log}");
            }
            await _reading;
            JobLogHygiene.AssertClean(Log);
            if (!File.Exists(_resultPath))
                return "none";
            return JsonSerializer.Deserialize(await File.ReadAllTextAsync(_resultPath), SimulationJsonContext.Default.SimulationResult)!.Outcome;
        }

        [GeneratedRegex(@"^Checkpoint generation \d+ committed")]
        private static partial Regex CommitLine();
    }

    /// <summary>
    /// One trainer's own record of its steps ("STEP TIME" lines) and of its checkpoints ("STEP
    /// TIME checkpoint", written before the marker), in the job's project directory on its host.
    /// </summary>
    private sealed record Timeline(string Host, long JobId, IReadOnlyList<(int Step, double Time)> Steps, IReadOnlyList<int> Checkpoints)
    {
        public int ResumedAt => Steps[0].Step - 1;
        public double Start => Steps[0].Time;
        public double End => Steps[^1].Time;
    }

    private static List<Timeline> ReadTimelines(IEnumerable<Host> hosts) =>
        hosts.SelectMany(host => Directory.EnumerateFiles(Path.Combine(host.Workspace.Root, "builds"), "timeline.txt", SearchOption.AllDirectories)
                .Select(path => ReadTimeline(host.Name, long.Parse(JobDirectory().Match(path).Groups[1].Value, CultureInfo.InvariantCulture), path)))
            .Where(timeline => timeline.Steps.Count > 0)
            .OrderBy(timeline => timeline.Start)
            .ToList();

    private static Timeline ReadTimeline(string host, long jobId, string path)
    {
        var entries = File.ReadAllLines(path).Where(line => line.Length > 0).Select(line => line.Split(' ')).ToList();
        int StepOf(string[] parts) => int.Parse(parts[0], CultureInfo.InvariantCulture);
        return new Timeline(host, jobId,
            entries.Where(parts => parts.Length == 2).Select(parts => (StepOf(parts), double.Parse(parts[1], CultureInfo.InvariantCulture))).ToList(),
            entries.Where(parts => parts.Length == 3 && parts[2] == "checkpoint").Select(StepOf).ToList());
    }

    private static string CounterCheckpoint(int step) => $"step={step} check={((long)step * 2654435761L + 12345L) % 4294967296L}\n";

    [Fact]
    public async Task A_300_step_run_survives_ten_interruptions_on_two_hosts_and_completes_with_no_human_action()
    {
        var plan = Plan(Seed);
        var output = TestContext.Current.TestOutputHelper!;
        output.WriteLine($"seed {Seed}:\n{Describe(plan)}");

        var bucket = "long-run-" + Guid.NewGuid().ToString("N")[..8];
        using (var client = S3Testbed.Client())
            await S3Testbed.CreateBucketAsync(client, bucket);
        using var store = new CountingProxy(S3Testbed.Endpoint);
        using var gitLab = new GpuExecutor.Tests.FakeGitLab(Token) { NextJobId = 9900 };
        await using var daemonA = await PrivateDaemon.StartAsync(liveRestore: true);
        await using var daemonB = await PrivateDaemon.StartAsync(liveRestore: false);
        ExecutorWorkspace Workspace(PrivateDaemon daemon, string name) => ReferenceTrainer.CopyInto(new ExecutorWorkspace(
            dockerEndpoint: daemon.Endpoint, hostName: name, stopGraceSeconds: 10, daemonReconnectSeconds: 90, extraConfig: $"""
            {S3Testbed.StoreConfig("shared", store.Endpoint, $"\"{bucket}\"")}
            [checkpoints]
            store = "shared"
            bucket = "{bucket}"
            lease_ttl_seconds = 8
            lease_clock_skew_seconds = 2
            lease_wait_seconds = 150
            agent_daemon_lost_seconds = 20
            deadline_margin_seconds = {DeadlineMarginSeconds}
            final_commit_wait_seconds = 30
            [continuation]
            gitlab_url = "{gitLab.Url}"
            token = "{Token}"
            max_segments = 100
            """));
        using var workspaceA = Workspace(daemonA, HostA);
        using var workspaceB = Workspace(daemonB, HostB);
        var hosts = new Dictionary<string, Host> { [HostA] = new(HostA, daemonA, workspaceA), [HostB] = new(HostB, daemonB, workspaceB) };

        var outcomes = new List<(long JobId, string Host, string Expected, string Actual)>();
        var startedBy = new Dictionary<long, PlannedJob>();
        var nextJobId = 9800L;
        RunningJob? previous = null;
        long trainingJobId = 0;

        foreach (var planned in plan)
        {
            var host = hosts[planned.Host];
            if (planned.CorruptBefore)
            {
                // The store rots the newest generation's blob while no job runs: the trainer saved
                // it on the signal that ended the job before, at its last step.
                var saved = ReadTimelines(hosts.Values).Single(timeline => timeline.JobId == trainingJobId).Steps[^1].Step;
                await WaitForAgentsToEndAsync();
                RotStoredBlob(bucket, Encoding.ASCII.GetBytes(CounterCheckpoint(saved)));
            }
            var jobId = nextJobId++;
            gitLab.AddJob(1, jobId, "train", "running");
            var first = planned.Interruptions.FirstOrDefault();
            // Each job's timeout stands in for GitLab's: an hour, or short where the deadline is the interruption.
            var timeout = first?.Kind switch
            {
                Interruption.Deadline => PrepareAllowanceSeconds + DeadlineMarginSeconds + (int)(first.AfterSteps * StepSeconds),
                // The orphan trains on for about 10 s after its runner dies, while the retry waits.
                Interruption.RetryWhileOrphanTrains => PrepareAllowanceSeconds + DeadlineMarginSeconds + (int)(first.AfterSteps * StepSeconds) + 10,
                _ => 3600,
            };
            var job = RunningJob.Start(host, jobId, timeout);
            output.WriteLine($"job {jobId} on {host.Name} (timeout {timeout} s)");
            // A job after a runner's death adopts the training its container still runs; any other starts a trainer.
            if (planned.After != Interruption.RunnerKill)
            {
                trainingJobId = jobId;
                startedBy[jobId] = planned;
            }

            var endedBy = (Interruption?)null;
            string expected = "success";
            foreach (var interruption in planned.Interruptions)
            {
                if (interruption.Kind != Interruption.Deadline)
                {
                    await job.WaitUntilAsync(running => running.FirstStep >= 0, "a first step", TimeSpan.FromMinutes(3));
                    var mark = job.LastStep;
                    await job.WaitUntilAsync(running => running.LastStep >= mark + interruption.AfterSteps, $"step {mark + interruption.AfterSteps}", TimeSpan.FromMinutes(2));
                }
                if (interruption.Kind != Interruption.Deadline)
                    output.WriteLine($"  {interruption.Kind} at step {job.LastStep}");
                switch (interruption.Kind)
                {
                    case Interruption.Cancel:
                        await job.CancelAsync();
                        expected = "canceled";
                        break;
                    case Interruption.Deadline:
                        expected = "failed";
                        break;
                    case Interruption.RunnerKill or Interruption.RetryWhileOrphanTrains:
                        await job.KillRunnerAsync();
                        expected = "none";
                        break;
                    case Interruption.DaemonRestartWithLiveRestore:
                        await host.Daemon.StopDaemonOnlyAsync();
                        await Task.Delay(TimeSpan.FromSeconds(3), TestContext.Current.CancellationToken);
                        await host.Daemon.StartAgainAsync();
                        await job.WaitUntilAsync(running => running.Log.Contains("The Docker daemon answers again", StringComparison.Ordinal), "the daemon back", TimeSpan.FromMinutes(2));
                        break;
                    case Interruption.DaemonRestartWithoutLiveRestore:
                        await host.Daemon.StopDaemonOnlyAsync();
                        await host.Daemon.StartAgainAsync();
                        expected = "system_failure";
                        break;
                    case Interruption.HostLoss:
                        await host.Daemon.LoseAsync(host.Workspace.Root);
                        Directory.Delete(Path.Combine(host.Workspace.Root, "state"), recursive: true);
                        expected = "none";
                        break;
                    case Interruption.StoreOutage:
                        var forwardedBefore = store.GoDown();
                        await Task.Delay(TimeSpan.FromSeconds(StoreOutageSeconds), TestContext.Current.CancellationToken);
                        // Not one request reached the store while it was down (a commit `run`
                        // reports late may still have gone through before).
                        Assert.True(store.Forwarded == forwardedBefore, $"{store.Forwarded - forwardedBefore} requests reached the store while it was down:\n{job.Log}");
                        store.ComeBack();
                        // Commits from before the outage were reported long since: the next line is a new commit.
                        var committed = job.Commits;
                        await job.WaitUntilAsync(running => running.Commits > committed, "a commit after the store came back", TimeSpan.FromMinutes(2));
                        break;
                    case Interruption.AgentKill:
                        await Testbed.RunAsync("pkill", ["-KILL", "-f", $"checkpoints agent {trainingJobId} "], null, null);
                        await job.WaitUntilAsync(running => running.Log.Contains("WARNING: the checkpoint agent of this run died", StringComparison.Ordinal), "the agent started again", TimeSpan.FromMinutes(1));
                        break;
                }
                if (EndsTheJob(interruption.Kind))
                    endedBy = interruption.Kind;
            }

            var outcome = await job.FinishAsync(TimeSpan.FromMinutes(10));
            if (endedBy == Interruption.HostLoss)
                await host.Daemon.StartAgainAsync();
            outcomes.Add((jobId, host.Name, expected, outcome));
            output.WriteLine($"  ended: {outcome} (expected {expected})");
            Assert.True(outcome == expected, $"job {jobId} on {host.Name} ended {outcome}, not {expected}:\n{job.Log}");
            CheckJobLog(planned, job);
            gitLab.SetStatus(jobId, outcome == "success" ? "success" : outcome == "canceled" ? "canceled" : "failed");
            if (endedBy == Interruption.Deadline)
            {
                // Continuation: the agent retries the job through the GitLab API; that job runs next.
                await gitLab.WaitForRetryAsync(jobId, TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
                nextJobId = gitLab.Retries.Single(retry => retry.From == jobId).To;
            }
            previous = job;
        }

        // The last job ran the training to its end.
        Assert.Contains($"training complete at step {TotalSteps}", previous!.Log);
        Assert.Equal(0, gitLab.UnauthorizedRequests);

        // Judged from the trainers' own timelines on both hosts.
        var timelines = ReadTimelines(hosts.Values);
        var report = new StringBuilder("lost steps per interruption:\n");
        var lostTotal = 0;
        for (var index = 0; index < timelines.Count; index++)
        {
            var timeline = timelines[index];
            // Each trainer counts on by one from where it resumed.
            Assert.Equal(Enumerable.Range(timeline.Steps[0].Step, timeline.Steps.Count), timeline.Steps.Select(entry => entry.Step));
            if (index == 0)
            {
                Assert.Equal(0, timeline.ResumedAt);
                continue;
            }
            var before = timelines[index - 1];
            // Never two trainers at once: this one's first step came after the last one's last.
            Assert.True(timeline.Start > before.End, $"job {timeline.JobId} on {timeline.Host} trained from {timeline.Start:F3} while job {before.JobId} on {before.Host} trained until {before.End:F3}");
            var reached = before.Steps[^1].Step;
            var lost = reached - timeline.ResumedAt;
            // The trainer before this one ended with the job before this one.
            var cause = startedBy[timeline.JobId].After ?? throw new Xunit.Sdk.XunitException($"job {timeline.JobId} started a trainer after no interruption");
            var fallback = startedBy[timeline.JobId].CorruptBefore;
            var label = fallback ? $"{cause} + {Interruption.CorruptNewestBlob}" : cause.ToString();
            report.AppendLine($"  {label,-48} trainer of job {before.JobId} ({before.Host}) reached step {reached}; job {timeline.JobId} ({timeline.Host}) resumed at {timeline.ResumedAt}: {Math.Max(0, lost)} lost");
            lostTotal += Math.Max(0, lost);
            if (lost <= 0)
            {
                Assert.Equal(0, lost);
                continue;
            }
            // The counter went back: only after host loss or a fallback past a corrupt generation,
            // and then to a checkpoint the trainer wrote (from its own record, not its job log,
            // which lags it), at most one commit interval back. Not necessarily one of its last
            // two: the agent commits the newest complete checkpoint when it looks, so a checkpoint
            // written while it uploads is passed over for the next, and the generation before the
            // newest may be older than the trainer's checkpoint before the newest.
            Assert.True(fallback || cause == Interruption.HostLoss, $"the step counter went back from {reached} to {timeline.ResumedAt} after {cause}");
            var allowed = before.Checkpoints;
            Assert.Contains(timeline.ResumedAt, allowed.Where(step => step < reached));
            var interval = CommitIntervalSteps(allowed);
            Assert.True(lost <= interval, $"{lost} steps lost after {label}, more than one commit interval ({interval} steps: checkpoints {string.Join(", ", allowed.TakeLast(6))})");
        }
        foreach (var adopted in plan.Where(job => job.After == Interruption.RunnerKill))
            report.AppendLine($"  {Interruption.RunnerKill,-48} re-attached: the same trainer went on, 0 lost");
        foreach (var kind in new[] { Interruption.DaemonRestartWithLiveRestore, Interruption.StoreOutage, Interruption.AgentKill })
            report.AppendLine($"  {kind,-48} the training went on in the same job: 0 lost");
        report.AppendLine($"  total: {lostTotal} steps lost of {TotalSteps} (one commit interval: the trainer's largest checkpoint gap + {AgentSteps} steps of the agent's poll and upload)");
        Assert.Equal(TotalSteps, timelines[^1].Steps[^1].Step);
        output.WriteLine(report.ToString());
        TestContext.Current.SendDiagnosticMessage(report.ToString());

        var lastHost = hosts[plan[^1].Host].Workspace;
        var runKey = Path.GetFileName(Directory.GetDirectories(Path.Combine(lastHost.Root, "state", "checkpoints")).Single());
        var story = await lastHost.CallVerbAsync(new Dictionary<string, string?>(), "runs", "show", runKey);
        Assert.True(story.ExitCode == 0, story.Stdout + story.Stderr);
        output.WriteLine(story.Stdout);

        async Task WaitForAgentsToEndAsync()
        {
            var waited = Stopwatch.StartNew();
            while ((await Testbed.RunAsync("pgrep", ["-f", $"checkpoints agent {trainingJobId} "], null, null)).ExitCode == 0 && waited.Elapsed < TimeSpan.FromSeconds(60))
                await Task.Delay(200, TestContext.Current.CancellationToken);
        }
    }

    /// <summary>What each job's own log must say about the interruption that started or hit it.</summary>
    private static void CheckJobLog(PlannedJob planned, RunningJob job)
    {
        var log = job.Log;
        if (planned.After == Interruption.RunnerKill)
        {
            Assert.True(log.Contains("This job adopts it", StringComparison.Ordinal), log);
            Assert.DoesNotContain("resumed at step", log);
        }
        if (planned.After == Interruption.HostLoss)
            Assert.True(log.Contains("whose lease expired", StringComparison.Ordinal), log);
        if (planned.After == Interruption.RetryWhileOrphanTrains)
            Assert.True(OrphanHolder().IsMatch(log), log);
        if (planned.CorruptBefore)
            Assert.True(log.Contains("IS CORRUPT", StringComparison.Ordinal) && log.Contains("WARNING: FELL BACK to generation", StringComparison.Ordinal), log);
        if (planned.Ending == Interruption.Deadline)
            Assert.True(log.Contains("deadline is near", StringComparison.Ordinal), log);
        if (planned.Ending == Interruption.DaemonRestartWithoutLiveRestore)
            Assert.True(log.Contains("the job's container was stopped from outside", StringComparison.Ordinal) || log.Contains("without live-restore a daemon restart stops every container", StringComparison.Ordinal), log);
        if (planned.Interruptions.Any(interruption => interruption.Kind == Interruption.StoreOutage))
            Assert.True(log.Contains("checkpoint commit failing since", StringComparison.Ordinal), log);
    }

    /// <summary>Flips one byte of the stored blob with this content, on s3rver's disk.</summary>
    private static void RotStoredBlob(string bucket, byte[] content)
    {
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(content));
        var stored = Directory.EnumerateFiles(Path.Combine(Environment.GetEnvironmentVariable("GPU_EXECUTOR_TESTBED_DIR")!, "s3-data", bucket), "*", SearchOption.AllDirectories)
            .SingleOrDefault(path => path.Contains(sha256, StringComparison.Ordinal) && path.EndsWith("._S3rver_object", StringComparison.Ordinal));
        Assert.True(stored is not null, $"no blob {sha256} ({Encoding.ASCII.GetString(content).Trim()}) in the store");
        var rotted = (byte[])content.Clone();
        rotted[5] ^= 0x01;
        File.WriteAllBytes(stored!, rotted);
    }

    [GeneratedRegex(@"job-(\d+)[/\\]")]
    private static partial Regex JobDirectory();

    [GeneratedRegex(@"is being trained by job \d+ on host host-[ab]")]
    private static partial Regex OrphanHolder();
}
