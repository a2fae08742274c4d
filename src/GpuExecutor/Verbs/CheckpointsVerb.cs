using System.Globalization;
using System.Text;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.HostFiles;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Verbs;

/// <summary>
/// `checkpoints list [RUN] | show RUN GENERATION | verify RUN [GENERATION] [--deep] | retain RUN [KEEP] [--orphans]`
/// for admins, and `checkpoints agent JOB RUN CONTAINER`, the sync agent that prepare starts.
/// </summary>
public static class CheckpointsVerb
{
    private const string Usage = "usage: gpu-executor checkpoints list [RUN] | show RUN GENERATION | verify RUN [GENERATION] [--deep] | retain RUN [KEEP] [--orphans] | push RUN DIR | pull RUN [GENERATION]";

    public static async Task<int> RunAsync(VerbContext context, string[] arguments, TextWriter stdout)
    {
        var config = context.Config;
        switch (arguments)
        {
            case ["list"]:
            {
                using var store = ObjectStores.Open(config.Checkpoints.StoreOrLocal(config.StateDir));
                var runs = await CheckpointRepository.ListRunsAsync(store, config.Checkpoints.Bucket, config.Checkpoints.Prefix, context.Stop);
                stdout.WriteLine($"{"RUN",-40} {"LATEST",8} {"COMMITTED (UTC)",-20} {"JOB",10} {"SIZE (MiB)",12}");
                foreach (var run in runs)
                {
                    var repository = new CheckpointRepository(store, config.Checkpoints.Bucket, config.Checkpoints.Prefix, run, stdout.WriteLine);
                    var latest = await repository.ReadLatestAsync(context.Stop);
                    var manifest = latest is { } generation ? await repository.ReadManifestAsync(generation, context.Stop) : null;
                    stdout.WriteLine($"{run,-40} {latest,8} {manifest?.CommittedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} {manifest?.JobId,10} {manifest?.TotalBytes / 1048576.0,12:0.0}");
                }
                return ExitCodes.Success;
            }
            case ["list", var run]:
            {
                var (store, repository) = Open(context, run, stdout);
                using var _ = store;
                var latest = await repository.ReadLatestAsync(context.Stop);
                stdout.WriteLine($"{"GENERATION",10} {"COMMITTED (UTC)",-20} {"JOB",10} {"FILES",6} {"SIZE (MiB)",12}");
                foreach (var generation in await repository.ListGenerationsAsync(context.Stop))
                {
                    var manifest = await repository.ReadManifestAsync(generation, context.Stop);
                    var note = generation == latest ? "  <- LATEST" : generation > latest ? "  (not committed: no LATEST names it)" : "";
                    stdout.WriteLine($"{generation,10} {manifest.CommittedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} {manifest.JobId,10} {manifest.Files.Count,6} {manifest.TotalBytes / 1048576.0,12:0.0}{note}");
                }
                if (await repository.ReadContinuationAsync(context.Stop) is { } chain)
                {
                    stdout.WriteLine(chain.State switch
                    {
                        ContinuationRecord.Retried => $"continuation: job {chain.FromJob} was retried as job {chain.NextJob}, segment {chain.Segment}, at {chain.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
                        ContinuationRecord.Retrying => $"continuation: retrying job {chain.FromJob} as segment {chain.Segment} since {chain.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC",
                        _ => $"continuation: retrying job {chain.FromJob} as segment {chain.Segment} failed at {chain.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC: {chain.Error}",
                    });
                }
                return ExitCodes.Success;
            }
            case ["show", var run, var generationText]:
            {
                var (store, repository) = Open(context, run, stdout);
                using var _ = store;
                var manifest = await repository.ReadManifestAsync(Generation(generationText), context.Stop);
                stdout.WriteLine(Encoding.UTF8.GetString(manifest.ToJson()));
                return ExitCodes.Success;
            }
            case ["verify", var run, .. var rest] when rest.Length <= 2:
            {
                var (store, repository) = Open(context, run, stdout);
                using var _ = store;
                var deep = rest.Contains("--deep");
                var generationText = rest.FirstOrDefault(argument => argument != "--deep");
                var generation = generationText is null
                    ? await repository.ReadLatestAsync(context.Stop) ?? throw new SystemFailureException($"run '{run}' has no committed generation.")
                    : Generation(generationText);
                var problems = await repository.VerifyAsync(generation, deep, context.Stop);
                foreach (var problem in problems)
                    stdout.WriteLine($"  {problem}");
                stdout.WriteLine(problems.Count == 0 ? $"generation {generation} of '{run}' is complete{(deep ? " and every blob hashes right" : "")}." : $"generation {generation} of '{run}' has {problems.Count} problems.");
                return problems.Count == 0 ? ExitCodes.Success : throw new SystemFailureException($"generation {generation} of run '{run}' failed verification.");
            }
            case ["retain", var run, .. var rest] when rest.Length <= 2:
            {
                var (store, repository) = Open(context, run, stdout);
                using var _ = store;
                var keepText = rest.FirstOrDefault(argument => argument != "--orphans");
                var keep = keepText is null ? config.Checkpoints.KeepGenerations
                    : int.TryParse(keepText, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) && parsed >= 1 ? parsed
                    : throw new SystemFailureException($"'{keepText}' is not a number of generations to keep (1 or more).");
                var result = await repository.ApplyRetentionAsync(keep, rest.Contains("--orphans"), context.Stop);
                stdout.WriteLine($"deleted generations [{string.Join(", ", result.DeletedGenerations)}] and {result.DeletedBlobs} blobs ({result.DeletedBytes / 1048576.0:0.0} MiB).");
                return ExitCodes.Success;
            }
            case ["push", var run, var directory]:
            {
                // Commits a directory as the run's next generation (job 0), as the agent would:
                // to seed a run from an existing checkpoint.
                var (store, repository) = Open(context, run, stdout);
                using var _ = store;
                var snapshots = Path.Combine(RunDirectories.For(config.StateDir, run).Root, "push-snapshots");
                Directory.CreateDirectory(snapshots);
                try
                {
                    var clock = System.Diagnostics.Stopwatch.StartNew();
                    var snapshot = new CheckpointSnapshotter(Path.GetFullPath(directory), snapshots).Take()
                        ?? throw new SystemFailureException($"'{directory}' changed while it was copied; try again once nothing writes to it.");
                    var result = await repository.CommitAsync(snapshot, 0, config.Checkpoints.KeepGenerations, KillSwitch(), context.Stop);
                    stdout.WriteLine($"committed generation {result.Generation} of '{run}': {snapshot.Files.Count} files, {result.UploadedBytes} of {result.TotalBytes} bytes uploaded in {clock.Elapsed.TotalSeconds:0.00} s.");
                }
                finally
                {
                    Directory.Delete(snapshots, recursive: true);
                }
                return ExitCodes.Success;
            }
            case ["pull", var run, .. var rest] when rest.Length <= 1:
            {
                // Materialises a generation in the run's work directory on this host, as prepare would.
                var (store, repository) = Open(context, run, stdout);
                using var _ = store;
                var directories = RunDirectories.For(config.StateDir, run);
                Directory.CreateDirectory(directories.Root);
                var clock = System.Diagnostics.Stopwatch.StartNew();
                var restored = await new CheckpointRestorer(repository, directories, stdout.WriteLine).RestoreAsync(rest.Length == 1 ? Generation(rest[0]) : null, context.Stop)
                    ?? throw new SystemFailureException($"run '{run}' has no committed generation.");
                stdout.WriteLine($"restored generation {restored.Generation} into {directories.Work}: {restored.Files} files, {restored.DownloadedBytes} of {restored.Bytes} bytes downloaded in {clock.Elapsed.TotalSeconds:0.00} s.");
                return ExitCodes.Success;
            }
            case ["agent", var jobText, var run, var container]:
                return await RunAgentAsync(context, jobText, run, container);
            default:
                throw new SystemFailureException(Usage);
        }
    }

    private static (IObjectStore Store, CheckpointRepository Repository) Open(VerbContext context, string run, TextWriter stdout)
    {
        if (!CheckpointRequest.IsRunKey(run))
            throw new SystemFailureException($"'{run}' is not a run key.");
        return CheckpointStores.Open(context.Config, run, stdout.WriteLine);
    }

    /// <summary>
    /// Fault injection for the crash tests: with GPU_EXECUTOR_FAULT_KILL_AFTER=STEP (a
    /// <see cref="CommitStep"/>), the process SIGKILLs itself right after that step of a commit,
    /// as a host losing power would stop it. Unset, as in production, it does nothing.
    /// </summary>
    private static Func<CommitStep, Task>? KillSwitch() =>
        Environment.GetEnvironmentVariable("GPU_EXECUTOR_FAULT_KILL_AFTER") is { Length: > 0 } text && Enum.TryParse<CommitStep>(text, out var killAfter)
            ? step =>
            {
                if (step == killAfter)
                    System.Diagnostics.Process.GetCurrentProcess().Kill();
                return Task.CompletedTask;
            }
            : null;

    private static long Generation(string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var generation) && generation > 0
            ? generation
            : throw new SystemFailureException($"'{text}' is not a generation number.");

    /// <summary>The detached agent: its log is a file in the run's directory (it has no job log to write to).</summary>
    private static async Task<int> RunAgentAsync(VerbContext context, string jobText, string run, string container)
    {
        if (!long.TryParse(jobText, NumberStyles.None, CultureInfo.InvariantCulture, out var jobId) || !CheckpointRequest.IsRunKey(run))
            throw new SystemFailureException("usage: gpu-executor checkpoints agent JOB_ID RUN_KEY CONTAINER");
        var config = context.Config;
        var directories = RunDirectories.For(config.StateDir, run);
        void Log(string line) => context.Log.WriteLine($"{DateTime.UtcNow:yyyy-MM-ddTHH:mm:ss.fffZ} job {jobId}: {line}");
        var (store, repository) = CheckpointStores.Open(config, run, Log);
        using var _ = store;
        using var driver = new DockerContainerDriver(config.Docker.Endpoint);
        var timing = new AgentTiming(config.Checkpoints.QuietPeriod, config.Checkpoints.PollInterval, config.Checkpoints.KeepGenerations) { GiveUpAfterJob = config.Checkpoints.AgentGiveUp };
        Directory.CreateDirectory(directories.Root);
        // Held while the agent commits: the run's next prepare waits on it before restoring.
        using (await HostLock.AcquireAsync(directories.AgentLock, context.Stop))
        {
            Log($"agent started for container {container}, run {run}");
            await new CheckpointAgent(jobId, container, driver, repository, directories, timing, Log, KillSwitch()).RunAsync(context.Stop);
            Log("agent done");
        }
        // Outside the lock: the retry it makes is the run's next job, whose prepare takes the lock.
        await ContinueIfAskedAsync(config.Continuation, jobId, repository, directories, Log, context.Stop);
        return ExitCodes.Success;
    }

    /// <summary>
    /// When run asked for it (the job reached its deadline), retries the job through the GitLab
    /// API once it has ended; only if the agent's last commit succeeded, or the retry would resume
    /// from an older checkpoint than the one the trainer saved. Failures go to the agent's log and
    /// to the run's record in the store, where the next job's prepare shows them.
    /// </summary>
    private static async Task ContinueIfAskedAsync(ContinuationSettings settings, long jobId, CheckpointRepository repository, RunDirectories directories, Action<string> log, CancellationToken cancellationToken)
    {
        if (ContinuationFiles.ReadRequest(directories, jobId) is not { } request)
            return;
        try
        {
            if (!settings.Enabled)
                log("continuation: asked for, but [continuation] is no longer configured; not continued.");
            else if (CheckpointAgent.ReadStatus(directories, jobId) is { LastError: { } error })
                log($"continuation: not continued, the newest checkpoint is not safe in the store ({error}).");
            else
            {
                using var gitLab = new GitLabClient(settings.GitLabUrl!, settings.Token!, log);
                await new JobContinuer(gitLab, repository, settings, log).ContinueAsync(request, cancellationToken);
            }
        }
        catch (Exception error) when (error is GitLabApiException or SystemFailureException or IOException && !cancellationToken.IsCancellationRequested)
        {
            log($"continuation: job {jobId} could not be continued: {error.Message}");
        }
        finally
        {
            File.Delete(ContinuationFiles.RequestFile(directories, jobId));
        }
    }
}
