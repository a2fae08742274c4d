using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.Datasets;
using GpuExecutor.Gpus;
using GpuExecutor.HostFiles;
using GpuExecutor.Images;
using GpuExecutor.JobLog;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Stages;

namespace GpuExecutor.Verbs;

/// <summary>
/// `prepare`: admit the job's image, pull it per policy, and start the job's containers.
/// The runner retries preparation after calling cleanup (PROTOCOL.md, "prepare"), so this must be
/// safe to call again for the same job: leftovers of an earlier attempt are removed first.
/// </summary>
public static class PrepareVerb
{
    public static async Task<int> RunAsync(VerbContext context)
    {
        var config = context.Config;
        var log = context.Log;
        // The runner's clock for the job's timeout started just before this stage: the deadline
        // (and the signal before it) counts from here, not from when the container came up.
        var startedAt = DateTimeOffset.UtcNow;
        var payload = JobPayloadReader.Read(context.Environment);
        var job = JobIdentity.From(payload);
        var image = ResolveImage(config, payload);
        var jobVariables = payload.VariableMap();
        var gpuRequest = GpuRequest.FromJob(jobVariables, config.Gpus);
        var datasets = jobVariables.TryGetValue(DatasetDeclaration.Variable, out var declared)
            ? DatasetDeclaration.Parse(declared, config)
            : [];
        var checkpoints = CheckpointRequest.FromJob(jobVariables, job);
        if (checkpoints is not null)
            job = job with { RunKeyOverride = checkpoints.RunKey };

        using var driver = new DockerContainerDriver(config.Docker.Endpoint);
        // nvidia-smi took 24 to 38 ms on live H100/H200 hosts: ask it now, while the images and
        // leftovers are checked, rather than after, inside the GPU lock.
        var earlyInventory = gpuRequest.Count > 0 ? new NvidiaSmi(config.Gpus.NvidiaSmi).QueryAsync(context.Stop) : null;
        using (JobLogSection.Start(log, "gpu_executor_prepare", $"Preparing containers for job {job.JobId} (run key {job.RunKey})"))
        {
            foreach (var leftover in await driver.FindAsync(JobLabels.SelectJob(job.JobId), context.Stop))
            {
                log.WriteLine($"Removing {leftover.Name} left by an earlier attempt of this job.");
                await driver.RemoveAsync(leftover.Id, context.Stop);
            }

            await EnsureImageAsync(driver, image, config.Images.PullPolicy, jobChoseIt: true, log, context.Stop);
            var hasHelper = config.Images.Helper.Length > 0;
            if (hasHelper)
                await EnsureImageAsync(driver, config.Images.Helper, config.Images.PullPolicy, jobChoseIt: false, log, context.Stop);

            if (checkpoints is not null && await FindTrainingToAdoptAsync(driver, config, job, checkpoints.RunKey, context.Stop) is { } orphan)
            {
                await AdoptAsync(driver, config, job, orphan, startedAt, hasHelper, log, context.Stop);
                return ExitCodes.Success;
            }

            var workspace = JobWorkspace.For(config, job);
            Directory.CreateDirectory(workspace.BuildsHostDir);
            Directory.CreateDirectory(workspace.CacheHostDir);
            var checkpointEnvironment = new Dictionary<string, string>();
            if (checkpoints is not null)
            {
                var directories = RunDirectories.For(config.StateDir, checkpoints.RunKey);
                checkpointEnvironment = await RestoreCheckpointAsync(config, driver, job, checkpoints, directories, log, context.Stop);
                workspace = workspace with { CheckpointMount = new BindMount(directories.Work, config.Checkpoints.ContainerDir, ReadOnly: false) };
            }
            // Datasets arrive while the job waits for GPUs, and the job takes its GPUs only once
            // they are in: a long download never holds a GPU.
            var fetching = datasets.Count > 0
                ? MaterializeDatasetsAsync(config, job, datasets, log, context.Stop)
                : Task.FromResult<IReadOnlyList<BindMount>>([]);

            var storeEnvironment = StoreCredentialsForJob(config, datasets);
            foreach (var (name, value) in checkpointEnvironment)
                storeEnvironment[name] = value;
            var allocator = new GpuAllocator(driver, config.Gpus, config.StateDir, line => log.WriteLine(line));
            string jobContainer = "";
            IReadOnlyList<GpuDevice> gpus = [];
            GpuTopology topology = GpuTopology.Unknown;
            // Choose and create under the allocator's host-wide lock: the container's labels are
            // the ledger entry that keeps the next job off these GPUs.
            gpus = await allocator.AllocateAsync(gpuRequest, async (chosen, links) =>
            {
                topology = links;
                workspace = workspace with { DatasetMounts = await fetching };
                jobContainer = await StartAsync(driver, config, job, workspace, JobContainerNames.JobRole, image, startedAt, chosen, storeEnvironment, context.Stop);
            }, context.Stop, fetching, earlyInventory);
            await CheckStageServerAnswersAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.JobRole), image, JobContainerNames.JobRole, context.Stop);
            log.WriteLine($"Job container {jobContainer} runs {image}.");
            if (checkpoints is not null)
                StartCheckpointAgent(context, job, checkpoints.RunKey, log);
            if (gpus.Count > 0)
                await ReportGpusAsync(driver, config, job, gpus, topology, log, context.Stop);

            if (hasHelper)
            {
                var helperContainer = await StartAsync(driver, config, job, workspace, JobContainerNames.HelperRole, config.Images.Helper, startedAt, [], new Dictionary<string, string>(), context.Stop);
                await CheckStageServerAnswersAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.HelperRole), config.Images.Helper, JobContainerNames.HelperRole, context.Stop);
                log.WriteLine($"Helper container {helperContainer} runs {config.Images.Helper} for sources, caches and artifacts.");
            }
        }
        return ExitCodes.Success;
    }

    private static string ResolveImage(ExecutorConfig config, JobPayload payload)
    {
        // The payload, not CUSTOM_ENV_CI_JOB_IMAGE, is the trusted source for the image.
        var image = payload.Image?.Name is { Length: > 0 } named ? named : config.Images.Default;
        if (image.Length == 0)
            throw new BuildFailureException("the job names no image and the runner has no images.default; add `image:` to the job.");
        if (!ImageReference.IsValid(image))
            throw new BuildFailureException($"'{image}' is not a valid image reference.");

        var allowlist = new ImageAllowlist(config.Images.Allowed);
        if (allowlist.FindAdmittingPattern(image) is null)
            throw new BuildFailureException(
                $"image '{image}' is not allowed on this runner: it matches no pattern of images.allowed " +
                $"[{string.Join(", ", allowlist.Patterns.Select(pattern => $"\"{pattern}\""))}]. Use an allowed image or ask the runner's admin to add a pattern.");
        return image;
    }

    private static async Task EnsureImageAsync(IContainerDriver driver, string image, PullPolicy policy, bool jobChoseIt, TextWriter log, CancellationToken cancellationToken)
    {
        if (policy != PullPolicy.Always && await driver.ImageExistsAsync(image, cancellationToken))
            return;
        if (policy == PullPolicy.Never)
        {
            throw ImageFault(jobChoseIt, $"image '{image}' is not on this host and images.pull_policy is \"never\".");
        }

        log.WriteLine($"Pulling {image} (images.pull_policy = \"{(policy == PullPolicy.Always ? "always" : "if-not-present")}\")...");
        try
        {
            await driver.PullImageAsync(image, line => log.WriteLine($"  {line}"), cancellationToken);
        }
        catch (ImageUnavailableException error)
        {
            throw ImageFault(jobChoseIt, error.Message, error);
        }
    }

    /// <summary>
    /// The job chose its image, so a problem with it is its author's to fix (a build failure, not
    /// retried); the helper image is the admin's (a system failure).
    /// </summary>
    private static Exception ImageFault(bool jobChoseIt, string message, Exception? inner = null) =>
        jobChoseIt ? new BuildFailureException(message, inner: inner) : new SystemFailureException(message, inner);

    /// <summary>
    /// A store's credentials reach the job only where the admin set pass_credentials_to_job, and
    /// only for a store the job's DATASETS use; the first such store's, as the standard AWS_*
    /// variables that AWS SDKs and CLIs read.
    /// </summary>
    private static Dictionary<string, string> StoreCredentialsForJob(ExecutorConfig config, IReadOnlyList<DatasetMount> datasets)
    {
        var environment = new Dictionary<string, string>();
        var store = datasets
            .Select(dataset => config.Stores[dataset.Source.Store])
            .FirstOrDefault(candidate => candidate.PassCredentialsToJob && candidate.AccessKeyId is not null);
        if (store is null)
            return environment;
        environment["AWS_ACCESS_KEY_ID"] = store.AccessKeyId!.Value;
        environment["AWS_SECRET_ACCESS_KEY"] = store.SecretAccessKey!.Value;
        environment["AWS_REGION"] = store.Region;
        if (store.Endpoint is { } endpoint)
            environment["AWS_ENDPOINT_URL"] = endpoint;
        return environment;
    }

    /// <summary>
    /// Puts the run's newest committed generation (or the pinned one, or nothing) in the run's
    /// work directory before any script runs, and tells the job what it got.
    /// </summary>
    private static async Task<Dictionary<string, string>> RestoreCheckpointAsync(ExecutorConfig config, IContainerDriver driver, JobIdentity job, CheckpointRequest request, RunDirectories directories, TextWriter log, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(directories.Root)!);
        // Only the executor goes below STATE_DIR/checkpoints; the work directory is reached
        // through the container's mount.
        File.SetUnixFileMode(Path.GetDirectoryName(directories.Root)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateDirectory(directories.Root);
        var environment = new Dictionary<string, string>
        {
            ["CHECKPOINT_DIR"] = config.Checkpoints.ContainerDir,
            ["CHECKPOINT_RUN_KEY"] = request.RunKey,
            ["CHECKPOINT_MARKER"] = config.Checkpoints.ContainerDir + "/" + CheckpointPaths.CompleteMarker,
            ["CHECKPOINT_RESTORED_GENERATION"] = "",
            ["CHECKPOINT_RESTORED_FROM_JOB"] = "",
            ["CHECKPOINT_RESTORED_COMMITTED_AT"] = "",
        };
        using (JobLogSection.Start(log, "gpu_executor_checkpoint_restore", $"Checkpoint restore: run {request.RunKey}", collapsed: false))
        {
            var (store, repository) = CheckpointStores.Open(config, request.RunKey, line => log.WriteLine(line));
            using var _ = store;
            await WarnAboutAnotherLiveJobAsync(driver, job, log, cancellationToken);
            await WaitForEarlierAgentAsync(config, directories, log, cancellationToken);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var restorer = new CheckpointRestorer(repository, directories, line => log.WriteLine(line));
            RestoreResult? restored = null;
            if (request.Restore)
                restored = await restorer.RestoreAsync(request.PinnedGeneration, cancellationToken);
            else
                restorer.StartEmpty();
            if (!request.Restore)
                log.WriteLine($"  {CheckpointRequest.RestoreVariable}=off: the job starts with an empty {config.Checkpoints.ContainerDir}.");
            else if (restored is null)
                log.WriteLine($"  run {request.RunKey} has no committed checkpoint yet: the job starts with an empty {config.Checkpoints.ContainerDir}.");
            else
            {
                log.WriteLine($"  restored generation {restored.Generation} (committed {restored.CommittedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC by job {restored.FromJobId}): " +
                              $"{restored.Files} files, {restored.Bytes / 1048576.0:0.0} MiB ({restored.DownloadedBytes / 1048576.0:0.0} MiB downloaded, the rest already on this host) in {clock.Elapsed.TotalSeconds:0.0} s, every file checked against its SHA-256.");
                environment["CHECKPOINT_RESTORED_GENERATION"] = restored.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture);
                environment["CHECKPOINT_RESTORED_FROM_JOB"] = restored.FromJobId.ToString(System.Globalization.CultureInfo.InvariantCulture);
                environment["CHECKPOINT_RESTORED_COMMITTED_AT"] = restored.CommittedAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture);
            }
            log.WriteLine($"  {config.Checkpoints.ContainerDir} is committed to the store whenever {CheckpointPaths.CompleteMarker} appears in it" +
                          (config.Checkpoints.QuietPeriod > TimeSpan.Zero ? $" (or, until the first marker, after {config.Checkpoints.QuietPeriod.TotalSeconds:0} s without changes)." : "."));
            if (config.Continuation.Enabled && request.Continue)
                await PlaceInChainAsync(config.Continuation, job, repository, directories, environment, log, cancellationToken);
        }
        return environment;
    }

    /// <summary>
    /// Which segment of the run's continuation chain this job is, from the record in the store,
    /// for the job log, the job's environment and run (which decides at the deadline whether to
    /// ask for one more).
    /// </summary>
    private static async Task PlaceInChainAsync(ContinuationSettings settings, JobIdentity job, CheckpointRepository repository, RunDirectories directories, Dictionary<string, string> environment, TextWriter log, CancellationToken cancellationToken)
    {
        var record = await repository.ReadContinuationAsync(cancellationToken);
        var segment = ContinuationRecord.SegmentOf(record, job.JobId);
        long? continues = segment > 1 ? record!.FromJob : null;
        ContinuationFiles.WriteSegment(directories, job.JobId, new JobSegment(segment, continues));
        environment["CHECKPOINT_SEGMENT"] = segment.ToString(CultureInfo.InvariantCulture);
        environment["CHECKPOINT_MAX_SEGMENTS"] = settings.MaxSegments.ToString(CultureInfo.InvariantCulture);
        if (record is { State: ContinuationRecord.Failed } && segment == 1)
            log.WriteLine($"  WARNING: the last continuation of this run (of job {record.FromJob}) failed: {record.Error}");
        var place = continues is { } previous
            ? $"  Continuation: this job is segment {segment} of at most {settings.MaxSegments}, continuing job {previous}."
            : $"  Continuation: this job is segment 1 of at most {settings.MaxSegments}.";
        log.WriteLine(place + (segment < settings.MaxSegments
            ? " If it reaches its deadline, it is retried through the GitLab API once it has ended, and the retry resumes from the newest checkpoint."
            : " It is the last one continuation.max_segments allows: at its deadline the run stops."));
    }

    /// <summary>
    /// The run's training, still running with no `run` following it: its job's runner died
    /// (`run` holds the main-stage lock while it follows, and the kernel frees the lock with the
    /// process). Null unless the record, the free lock, the running container and its run-key
    /// label all agree.
    /// </summary>
    private static async Task<MainStageRecord?> FindTrainingToAdoptAsync(IContainerDriver driver, ExecutorConfig config, JobIdentity job, string runKey, CancellationToken cancellationToken)
    {
        var directories = RunDirectories.For(config.StateDir, runKey);
        if (Reattach.ReadMainStage(directories) is not { } record || record.JobId == job.JobId)
            return null;
        using (var free = HostLock.TryAcquire(directories.MainStageLock))
        {
            if (free is null)
                return null;
        }
        if (!await IsRunningAsync(driver, record.Container, cancellationToken))
            return null;
        var owners = await driver.FindAsync(JobLabels.SelectJob(record.JobId), cancellationToken);
        return owners.Any(found => found.Name == record.Container && found.Labels.GetValueOrDefault(JobLabels.RunKey) == runKey) ? record : null;
    }

    /// <summary>Whether the container runs now; one removed since it was found runs nothing.</summary>
    private static async Task<bool> IsRunningAsync(IContainerDriver driver, string container, CancellationToken cancellationToken)
    {
        try
        {
            return await driver.InspectStateAsync(container, cancellationToken) is { Running: true };
        }
        catch (ContainerEngineException)
        {
            return false;
        }
    }

    /// <summary>
    /// Re-attach: this job takes over the run's training instead of starting it again. Its
    /// main step will follow that stage to its end; the GPUs, the checkpoint agent and the
    /// container stay as they are, and this job's cleanup removes them. A helper container, if
    /// the config has one, mounts the adopted job's builds directory, so artifacts and caches
    /// come from the training's worktree.
    /// </summary>
    private static async Task AdoptAsync(IContainerDriver driver, ExecutorConfig config, JobIdentity job, MainStageRecord orphan, DateTimeOffset startedAt, bool hasHelper, TextWriter log, CancellationToken cancellationToken)
    {
        // The helper first: if it fails, prepare fails before this job owns the training, and
        // the cleanup that follows removes only this job's own containers.
        if (hasHelper)
        {
            var trainingWorkspace = JobWorkspace.For(config, job with { JobId = orphan.JobId });
            var helperContainer = await StartAsync(driver, config, job, trainingWorkspace, JobContainerNames.HelperRole, config.Images.Helper, startedAt, [], new Dictionary<string, string>(), cancellationToken);
            await CheckStageServerAnswersAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.HelperRole), config.Images.Helper, JobContainerNames.HelperRole, cancellationToken);
            log.WriteLine($"Helper container {helperContainer} runs {config.Images.Helper} on job {orphan.JobId}'s builds directory.");
        }
        using (JobLogSection.Start(log, "gpu_executor_reattach", "Re-attach", collapsed: false))
        {
            log.WriteLine($"  job {orphan.JobId}'s training is still running in {orphan.Container} (its {orphan.Stage}, started {orphan.StartedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC), and no runner follows it: that job's runner died before the job ended.");
            log.WriteLine($"  This job adopts it: its {orphan.Stage} follows that training to its end instead of starting it again, and it skips {string.Join(", ", Reattach.SkippedWhenAdopting)}, which would change the worktree under the training. The GPUs, the container and job {orphan.JobId}'s checkpoint agent stay as they are; this job's cleanup removes the container.");
            Reattach.WriteAdoption(config.StateDir, job.JobId, new AdoptedStage(orphan.JobId, orphan.Container, orphan.Stage, orphan.Nonce, startedAt + job.Timeout));
        }
    }

    /// <summary>
    /// Another job of the same run whose container still runs: its runner died before cleanup, or
    /// the run was started twice. Both trainers then commit to the run and the newest generation
    /// may come from either, so the job log says so loudly, with what to do about it.
    /// </summary>
    private static async Task WarnAboutAnotherLiveJobAsync(IContainerDriver driver, JobIdentity job, TextWriter log, CancellationToken cancellationToken)
    {
        var sameRun = new Dictionary<string, string>
        {
            [JobLabels.Managed] = "true",
            [JobLabels.RunKey] = job.RunKey,
            [JobLabels.Role] = JobContainerNames.JobRole,
        };
        foreach (var other in await driver.FindAsync(sameRun, cancellationToken))
        {
            var otherJob = other.Labels.GetValueOrDefault(JobLabels.JobId, "?");
            if (otherJob == job.JobId.ToString(CultureInfo.InvariantCulture))
                continue;
            if (!await IsRunningAsync(driver, other.Name, cancellationToken))
                continue;
            log.WriteLine($"  WARNING: job {otherJob} of this run is still running in container {other.Name} (its runner may have died before cleanup, or the run was started twice). " +
                          $"Both jobs now commit checkpoints to run {job.RunKey}, and the newest generation may come from either. An admin can stop it with `docker rm -f {other.Name}`; `gpu-executor gc` removes it once its deadline has passed.");
        }
    }

    /// <summary>
    /// The previous job of the run (cancelled, timed out) may still be committing its last
    /// checkpoint: restore waits for that agent to finish, up to the final commit wait, so the
    /// job resumes from the newest checkpoint and not the one before it.
    /// </summary>
    private static async Task WaitForEarlierAgentAsync(ExecutorConfig config, RunDirectories directories, TextWriter log, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(config.Checkpoints.FinalCommitWait);
        var waiting = HostLock.AcquireAsync(directories.AgentLock, timeout.Token);
        if (!waiting.IsCompleted)
            log.WriteLine("  the agent of an earlier job of this run is still committing; waiting for it...");
        try
        {
            (await waiting).Dispose();
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            log.WriteLine($"  WARNING: the earlier agent did not finish within {config.Checkpoints.FinalCommitWait.TotalSeconds:0} s; restoring what is committed now.");
        }
    }

    /// <summary>
    /// Starts the checkpoint agent as a process of its own session, with its output in a file: it
    /// must outlive this prepare, every later stage, and the runner, until the job's container is
    /// gone and its last commit done. A fixed shell line does the redirection; every value
    /// travels as an argument, never inside the line.
    /// </summary>
    private static void StartCheckpointAgent(VerbContext context, JobIdentity job, string runKey, TextWriter log)
    {
        var directories = RunDirectories.For(context.Config.StateDir, runKey);
        var binary = Environment.ProcessPath ?? throw new SystemFailureException("cannot tell where the gpu-executor binary is, to start the checkpoint agent.");
        var agentLog = Path.Combine(directories.Root, $"agent-{job.JobId}.log");
        var start = new System.Diagnostics.ProcessStartInfo("setsid")
        {
            UseShellExecute = false,
            ArgumentList =
            {
                // nice: snapshots and uploads yield the CPU to the trainer's data loading.
                "-f", "nice", "-n", "10", "sh", "-c", "exec \"$0\" \"$@\" >>\"$GPU_EXECUTOR_AGENT_LOG\" 2>&1 </dev/null",
                binary, "--config", context.ConfigPath, "checkpoints", "agent",
                job.JobId.ToString(System.Globalization.CultureInfo.InvariantCulture), runKey,
                JobContainerNames.For(job.JobId, JobContainerNames.JobRole),
            },
            Environment = { ["GPU_EXECUTOR_AGENT_LOG"] = agentLog },
        };
        using var process = System.Diagnostics.Process.Start(start) ?? throw new SystemFailureException("could not start the checkpoint agent.");
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new SystemFailureException($"could not start the checkpoint agent: setsid exited with {process.ExitCode}.");
        log.WriteLine($"Checkpoint agent started for run {runKey} (its log: {agentLog}).");
    }

    private static async Task<IReadOnlyList<BindMount>> MaterializeDatasetsAsync(ExecutorConfig config, JobIdentity job, IReadOnlyList<DatasetMount> datasets, TextWriter log, CancellationToken cancellationToken)
    {
        using (JobLogSection.Start(log, "gpu_executor_datasets", $"Datasets: {datasets.Count}", collapsed: true))
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var cache = new DatasetCache(config.StateDir, line => log.WriteLine(line));
            var (mounts, summary) = await cache.MaterializeAsync(job.JobId, datasets, config.Stores, new ObjectFetcher(line => log.WriteLine(line)), cancellationToken);
            if (config.Datasets.CacheMaxBytes is { } cap && cache.Evict(cap, DateTime.UtcNow) is > 0 and var evicted)
                log.WriteLine($"  evicted {evicted / 1048576.0:0.0} MiB of least recently used objects (datasets.cache_max_size)");
            foreach (var dataset in datasets)
                log.WriteLine($"  {dataset.Source} -> {dataset.ContainerPath} (read-only)");
            log.WriteLine(
                $"  {summary.Objects} objects in {clock.Elapsed.TotalSeconds:0.0} s: {summary.BytesFetched / 1048576.0:0.0} MiB fetched, " +
                $"{summary.BytesServed / 1048576.0:0.0} MiB served, {summary.CacheHits} objects from the host cache" +
                (summary.Quarantined > 0 ? $", {summary.Quarantined} left out (unsafe keys)" : "") + ".");
            return mounts;
        }
    }

    /// <summary>
    /// Runs an empty stage through the new container's stage server, so that an image that cannot
    /// run it (no bash) fails here, clearly, and not later in the first stage.
    /// </summary>
    private static async Task CheckStageServerAnswersAsync(IContainerDriver driver, string container, string image, string role, CancellationToken cancellationToken)
    {
        var handshake = new StageRunner(driver, new RunSettings(), _ => { });
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(60));
            var result = await handshake.RunAsync(container, "exit 0\n"u8.ToArray(), Stream.Null, Stream.Null, timeout.Token);
            if (result.ExitCode == 0)
                return;
            throw new SystemFailureException($"the stage server in container '{container}' ran an empty stage with exit code {result.ExitCode}.");
        }
        catch (ContainerEngineException error)
        {
            // tini's exit code when it cannot exec the main command: bash is missing.
            const int CommandNotFound = 127;
            var state = await driver.InspectStateAsync(container, CancellationToken.None);
            if (state is not { Running: false, ExitCode: CommandNotFound })
                throw;
            throw ImageFault(
                jobChoseIt: role == JobContainerNames.JobRole,
                $"image '{image}' has no 'bash' on its PATH: gpu-executor runs every stage with bash, so the image must contain it (alpine-based images usually do not).",
                error);
        }
    }

    private static async Task<string> StartAsync(
        IContainerDriver driver,
        ExecutorConfig config,
        JobIdentity job,
        JobWorkspace workspace,
        string role,
        string image,
        DateTimeOffset startedAt,
        IReadOnlyList<GpuDevice> gpus,
        IReadOnlyDictionary<string, string> extraEnvironment,
        CancellationToken cancellationToken)
    {
        var name = JobContainerNames.For(job.JobId, role);
        var labels = new Dictionary<string, string>(JobLabels.For(job, role, startedAt));
        var uuids = gpus.Select(gpu => gpu.Uuid).ToList();
        if (uuids.Count > 0)
            labels[JobLabels.Gpus] = string.Join(',', uuids);
        var environment = new Dictionary<string, string>
        {
            // Always set: CUDA base images default NVIDIA_VISIBLE_DEVICES to "all", which on a
            // host whose default runtime is nvidia would hand the job every GPU. "void" is none.
            ["NVIDIA_VISIBLE_DEVICES"] = uuids.Count > 0 ? string.Join(',', uuids) : "void",
            ["CUDA_VISIBLE_DEVICES"] = string.Join(',', uuids),
        };
        foreach (var (key, value) in extraEnvironment)
            environment[key] = value;
        var spec = new ContainerSpec(
            name,
            image,
            StageServer.Command,
            labels,
            workspace.Mounts(config),
            environment,
            config.Container,
            WorkingDir: null)
        {
            GpuDeviceIds = config.Gpus.Mode == GpuMode.Nvidia ? uuids : [],
        };
        var id = await driver.CreateAndStartAsync(spec, cancellationToken);
        // The short id is also the container's hostname, which is what a job's log shows.
        return $"{name} ({id[..Math.Min(12, id.Length)]})";
    }

    /// <summary>
    /// Shows the job its GPUs in a collapsible section and, with real device requests, checks
    /// inside the container that it sees exactly those GPUs: a job must never silently train on
    /// the CPU, or on someone else's GPU.
    /// </summary>
    private static async Task ReportGpusAsync(IContainerDriver driver, ExecutorConfig config, JobIdentity job, IReadOnlyList<GpuDevice> gpus, GpuTopology topology, TextWriter log, CancellationToken cancellationToken)
    {
        using (JobLogSection.Start(log, "gpu_executor_gpus", $"GPU allocation: {gpus.Count} GPU{(gpus.Count == 1 ? "" : "s")}", collapsed: false))
        {
            foreach (var gpu in gpus)
            {
                var links = string.Join(" ", gpus.Where(other => other != gpu).Select(other => $"GPU{other.Index}:{topology.Link(gpu.Index, other.Index)}"));
                log.WriteLine($"  GPU {gpu.Index}  {gpu.Uuid}  {gpu.Name}  {gpu.MemoryTotalMiB?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?"} MiB{(links.Length > 0 ? "  links " + links : "")}");
            }
            if (config.Gpus.Mode == GpuMode.None)
            {
                log.WriteLine("  (gpus.mode = \"none\": assigned and labelled, but no device request was made)");
                return;
            }
        }

        var container = JobContainerNames.For(job.JobId, JobContainerNames.JobRole);
        var seen = new MemoryStream();
        var check = new StageRunner(driver, new RunSettings(), _ => { });
        var result = await check.RunAsync(container, System.Text.Encoding.UTF8.GetBytes(NvidiaSmiQuery.VisibleUuidsCommand + "\n"), seen, Stream.Null, cancellationToken);
        var visible = NvidiaSmiQuery.ParseVisibleUuids(System.Text.Encoding.UTF8.GetString(seen.ToArray()));
        var expected = gpus.Select(gpu => gpu.Uuid).Order(StringComparer.Ordinal).ToList();
        if (result.ExitCode != 0 || !visible.SequenceEqual(expected))
            throw new SystemFailureException(
                $"the job container sees GPUs [{string.Join(", ", visible)}] (nvidia-smi exit {result.ExitCode}) instead of its own [{string.Join(", ", expected)}]; is the NVIDIA Container Toolkit installed and configured for Docker?");
    }
}
