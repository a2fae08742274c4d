using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Datasets;
using GpuExecutor.Gpus;
using GpuExecutor.Images;
using GpuExecutor.Jobs;
using GpuExecutor.JobLog;
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
        var payload = JobPayloadReader.Read(context.Environment);
        var job = JobIdentity.From(payload);
        var image = ResolveImage(config, payload);
        var jobVariables = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var variable in payload.Variables)
            jobVariables[variable.Key] = variable.Value;
        var gpuRequest = GpuRequest.FromJob(jobVariables, config.Gpus);
        var datasets = jobVariables.TryGetValue(DatasetDeclaration.Variable, out var declared)
            ? DatasetDeclaration.Parse(declared, config)
            : [];

        using var driver = new DockerContainerDriver(config.Docker.Endpoint);
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

            var workspace = JobWorkspace.For(config, job);
            Directory.CreateDirectory(workspace.BuildsHostDir);
            Directory.CreateDirectory(workspace.CacheHostDir);
            // Datasets arrive while the job waits for GPUs, and the job takes its GPUs only once
            // they are in: a long download never holds a GPU.
            var fetching = datasets.Count > 0
                ? MaterializeDatasetsAsync(config, job, datasets, log, context.Stop)
                : Task.FromResult<IReadOnlyList<BindMount>>([]);

            var startedAt = DateTimeOffset.UtcNow;
            var storeEnvironment = StoreCredentialsForJob(config, datasets);
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
            }, context.Stop, fetching);
            await CheckStageServerAnswersAsync(driver, JobContainerNames.For(job.JobId, JobContainerNames.JobRole), image, JobContainerNames.JobRole, context.Stop);
            log.WriteLine($"Job container {jobContainer} runs {image}.");
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
        var result = await check.RunAsync(container, "nvidia-smi --query-gpu=uuid --format=csv,noheader\n"u8.ToArray(), seen, Stream.Null, cancellationToken);
        var visible = System.Text.Encoding.UTF8.GetString(seen.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Order().ToList();
        var expected = gpus.Select(gpu => gpu.Uuid).Order().ToList();
        if (result.ExitCode != 0 || !visible.SequenceEqual(expected))
            throw new SystemFailureException(
                $"the job container sees GPUs [{string.Join(", ", visible)}] (nvidia-smi exit {result.ExitCode}) instead of its own [{string.Join(", ", expected)}]; is the NVIDIA Container Toolkit installed and configured for Docker?");
    }
}
