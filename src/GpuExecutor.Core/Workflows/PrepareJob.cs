using GpuExecutor.AdminLog;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Continuation;
using GpuExecutor.Containers;
using GpuExecutor.Datasets;
using GpuExecutor.Gpus;
using GpuExecutor.Images;
using GpuExecutor.JobLog;
using GpuExecutor.Jobs;
using GpuExecutor.Metrics;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Stages;
using GpuExecutor.Storage;
using GpuExecutor.Telemetry;

namespace GpuExecutor.Workflows;

/// <summary>
/// `prepare`: admit the job's image and pull it per policy, adopt the run's orphaned training or
/// restore its checkpoint, fetch the datasets, take GPUs, and start the job's containers and its
/// checkpoint agent. The runner retries preparation after calling cleanup
/// (docs/runner-protocol.md), so this must be safe to call again for the same job: leftovers of an
/// earlier attempt are removed first.
/// </summary>
public sealed class PrepareJob(
    ExecutorConfig config,
    IContainerDriver driver,
    IGpuInventory gpuInventory,
    IObjectStoreOpener stores,
    ICheckpointAgentLauncher agentLauncher,
    TextWriter log,
    IDatasetStreamLauncher? streamLauncher = null,
    GitLabMlflowOpener? openGitLab = null,
    VerbFacts? facts = null,
    IGpuSamplerLauncher? samplerLauncher = null)
{
    public async Task RunAsync(JobPayload payload, CancellationToken cancellationToken)
    {
        // The runner's clock for the job's timeout started just before this stage: the deadline
        // (and the signal before it) counts from here, not from when the container came up.
        var startedAt = DateTimeOffset.UtcNow;
        var job = JobIdentity.From(payload);
        var image = ImageAdmission.Resolve(payload, config.Images.Default, config.Images.Allowed);
        var jobVariables = payload.VariableMap();
        var gpuRequest = GpuRequest.FromJob(jobVariables, config.Gpus);
        var datasets = jobVariables.TryGetValue(DatasetDeclaration.Variable, out var declared)
            ? DatasetDeclaration.Parse(declared, config)
            : [];
        var checkpoints = CheckpointRequest.FromJob(jobVariables, job);
        facts?.RunKey = checkpoints is null ? null : job.RunKey;
        var lifecycle = new CheckpointLifecycle(config, driver, stores, log);

        // nvidia-smi took 24 to 38 ms on live H100/H200 hosts: ask it now, while the images and
        // leftovers are checked, rather than after, inside the GPU lock.
        var earlyInventory = gpuRequest.Count > 0 ? gpuInventory.QueryAsync(cancellationToken) : null;
        using (JobLogSection.Start(log, "gpu_executor_prepare", $"Preparing containers for job {job.JobId} (run key {job.RunKey})"))
        {
            foreach (var leftover in await driver.FindAsync(JobLabels.SelectJob(job.JobId), cancellationToken))
            {
                log.WriteLine($"Removing {leftover.Name} left by an earlier attempt of this job.");
                await driver.RemoveAsync(leftover.Id, cancellationToken);
            }

            await ImageAdmission.EnsureAsync(driver, image, config.Images.PullPolicy, jobChoseIt: true, log, cancellationToken);
            var hasHelper = config.Images.Helper.Length > 0;
            if (hasHelper)
                await ImageAdmission.EnsureAsync(driver, config.Images.Helper, config.Images.PullPolicy, jobChoseIt: false, log, cancellationToken);

            var definition = checkpoints is null ? null : JobDefinition.Of(image, gpuRequest, declared, checkpoints);
            if (definition is not null && await Adoption.FindTrainingToAdoptAsync(driver, lifecycle.DirectoriesOf(job.RunKey), job, definition, cancellationToken) is { } orphan)
            {
                if (orphan.Adoptable)
                {
                    await AdoptAsync(job, orphan.Training, startedAt, hasHelper, cancellationToken);
                    MetricCounters.Add(config.StateDir, (HostMetrics.Reattaches, 1));
                    facts?.Checkpoint = new CheckpointFigures(null, orphan.Training.JobId);
                    await lifecycle.RecordAdoptionAsync(job, orphan.Training.JobId, cancellationToken);
                    // The training has its MLflow run already; the run learns who follows it now.
                    await new ExperimentTracking(config, stores, openGitLab, log).AttachAsync(payload, job, null, orphan.Training.JobId, cancellationToken);
                    return;
                }
                using (JobLogSection.Start(log, "gpu_executor_reattach", "Re-attach refused", collapsed: false))
                {
                    log.WriteLine($"  job {orphan.Training.JobId}'s training is still running in {orphan.Training.Container}, and no runner follows it; but this job is not the same training, so it does not adopt it:");
                    foreach (var difference in orphan.Differences)
                        log.WriteLine($"    {difference}");
                    log.WriteLine("  This job starts fresh under the run's lease: it waits for that training to end (checkpoints.lease_wait_seconds). Cancel the old job's container (`docker rm -f " + orphan.Training.Container + "`) to start at once.");
                }
            }

            var workspace = JobWorkspace.For(config, job);
            Directory.CreateDirectory(workspace.BuildsHostDir);
            Directory.CreateDirectory(workspace.CacheHostDir);
            var environment = JobDatasets.StoreCredentialsForJob(config, datasets);
            if (datasets.Any(dataset => dataset.Mode == DatasetMode.Stream))
                environment[DatasetStreams.WaitsVariable] = config.Builds.ContainerDir.TrimEnd('/') + "/" + DatasetStreams.WaitsFileName;
            if (checkpoints is not null)
            {
                foreach (var (name, value) in await lifecycle.RestoreAsync(job, checkpoints, cancellationToken))
                    environment[name] = value;
                facts?.Checkpoint = new CheckpointFigures(
                    long.TryParse(environment.GetValueOrDefault("CHECKPOINT_RESTORED_GENERATION"), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var restored) ? restored : null, null);
                // After the lease: one job of the run at a time finds or creates its MLflow run.
                foreach (var (name, value) in await new ExperimentTracking(config, stores, openGitLab, log).AttachAsync(payload, job, environment.GetValueOrDefault("CHECKPOINT_RESTORED_GENERATION"), null, cancellationToken))
                    environment[name] = value;
                workspace = workspace with { CheckpointMount = new BindMount(lifecycle.DirectoriesOf(job.RunKey).Work, config.Checkpoints.ContainerDir, ReadOnly: false) };
            }
            // Datasets arrive while the job waits for GPUs, and the job takes its GPUs only once
            // they are in: a long download never holds a GPU.
            var fetching = datasets.Count > 0
                ? new JobDatasets(config, stores, log).MaterializeAsync(job.JobId, datasets, cancellationToken)
                : Task.FromResult(MaterializedDatasets.None);

            var allocator = new GpuAllocator(driver, gpuInventory, config.Gpus, config.StateDir, log.WriteLine, (job.JobId, new HostMetricsTextfile(config, driver).TryWriteAsync));
            var jobContainer = "";
            var topology = GpuTopology.Unknown;
            // Choose and create under the allocator's host-wide lock: the container's labels are
            // the ledger entry that keeps the next job off these GPUs.
            var gpus = await allocator.AllocateAsync(gpuRequest, async (chosen, links) =>
            {
                topology = links;
                workspace = workspace with { DatasetMounts = (await fetching).Mounts };
                jobContainer = await StartAsync(job, workspace, JobContainerNames.JobRole, image, startedAt, chosen.Select(gpu => gpu.Uuid).ToList(), environment, cancellationToken, definition?.ToLabels());
            }, cancellationToken, fetching, earlyInventory);
            var materialized = await fetching;
            facts?.Gpus = gpus.Select(gpu => gpu.Uuid).ToList();
            if (materialized.Summary is { } fetched)
                facts?.Datasets = new DatasetFigures(fetched.Objects, fetched.CacheHits, fetched.BytesFetched, fetched.BytesServed, materialized.Streaming);
            // Outside the GPU lock: the next job's choice need not wait for this handshake.
            await StageServerHandshake.CheckAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.JobRole), image, jobChoseImage: true, cancellationToken);
            log.WriteLine($"Job container {jobContainer} runs {image}.");
            if (materialized.Streaming)
            {
                var streamLog = (streamLauncher ?? throw new SystemFailureException("this executor cannot start a dataset stream here.")).Start(job.JobId);
                log.WriteLine($"Dataset stream started (its log: {streamLog}).");
            }
            if (checkpoints is not null)
                lifecycle.StartAgent(agentLauncher, job, job.RunKey);
            if (gpus.Count > 0 && samplerLauncher is not null && config.Telemetry.GpuSampleInterval > TimeSpan.Zero)
            {
                var samplerLog = samplerLauncher.Start(job.JobId);
                log.WriteLine($"GPU usage is sampled every {config.Telemetry.GpuSampleInterval.TotalSeconds:0} s while the job holds its GPUs (the sampler's log: {samplerLog}).");
            }
            if (gpus.Count > 0)
                await GpuVisibilityCheck.ReportAndCheckAsync(driver, config.Gpus, JobContainerNames.For(job.JobId, JobContainerNames.JobRole), gpus, topology, log, cancellationToken);

            if (hasHelper)
            {
                var helperContainer = await StartAsync(job, workspace, JobContainerNames.HelperRole, config.Images.Helper, startedAt, [], new Dictionary<string, string>(), cancellationToken);
                await StageServerHandshake.CheckAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.HelperRole), config.Images.Helper, jobChoseImage: false, cancellationToken);
                log.WriteLine($"Helper container {helperContainer} runs {config.Images.Helper} for sources, caches and artifacts.");
            }
        }
    }

    /// <summary>
    /// Re-attach: this job takes over the run's training instead of starting it again. Its main
    /// step will follow that stage to its end; the GPUs, the checkpoint agent and the container
    /// stay as they are, and this job's cleanup removes them. A helper container, if the config
    /// has one, mounts the adopted job's builds directory, so artifacts and caches come from the
    /// training's worktree.
    /// </summary>
    private async Task AdoptAsync(JobIdentity job, MainStageRecord orphan, DateTimeOffset startedAt, bool hasHelper, CancellationToken cancellationToken)
    {
        // The helper first: if it fails, prepare fails before this job owns the training, and
        // the cleanup that follows removes only this job's own containers.
        if (hasHelper)
        {
            var trainingWorkspace = JobWorkspace.For(config, job with { JobId = orphan.JobId });
            var helperContainer = await StartAsync(job, trainingWorkspace, JobContainerNames.HelperRole, config.Images.Helper, startedAt, [], new Dictionary<string, string>(), cancellationToken);
            await StageServerHandshake.CheckAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.HelperRole), config.Images.Helper, jobChoseImage: false, cancellationToken);
            log.WriteLine($"Helper container {helperContainer} runs {config.Images.Helper} on job {orphan.JobId}'s builds directory.");
        }
        using (JobLogSection.Start(log, "gpu_executor_reattach", "Re-attach", collapsed: false))
        {
            log.WriteLine($"  job {orphan.JobId}'s training is still running in {orphan.Container} (its {orphan.Stage}, started {orphan.StartedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC), and no runner follows it: that job's runner died before the job ended.");
            log.WriteLine($"  This job adopts it: its {orphan.Stage} follows that training to its end instead of starting it again, and it skips {string.Join(", ", Reattach.SkippedWhenAdopting)}, which would change the worktree under the training. The GPUs, the container and job {orphan.JobId}'s checkpoint agent stay as they are; this job's cleanup removes the container.");
            Reattach.WriteAdoption(config.StateDir, job.JobId, new AdoptedStage(orphan.JobId, orphan.Container, orphan.Stage, orphan.Nonce, startedAt + job.Timeout));
        }
    }

    /// <summary>Creates and starts one of the job's containers; returns "NAME (SHORT ID)" for the log.</summary>
    private async Task<string> StartAsync(JobIdentity job, JobWorkspace workspace, string role, string image, DateTimeOffset startedAt, IReadOnlyList<string> gpuUuids, IReadOnlyDictionary<string, string> environment, CancellationToken cancellationToken, IReadOnlyDictionary<string, string>? definitionLabels = null)
    {
        var spec = JobContainerSpec.Build(config, job, workspace.Mounts(config), role, image, startedAt, gpuUuids, environment, definitionLabels);
        var id = await StageServerHandshake.StartAsync(driver, spec.Name, image, jobChoseImage: role == JobContainerNames.JobRole, () => driver.CreateAndStartAsync(spec, cancellationToken));
        // The short id is also the container's hostname, which is what a job's log shows.
        return $"{spec.Name} ({id[..Math.Min(12, id.Length)]})";
    }
}
