using System.Globalization;
using System.Text.Json.Serialization;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.Gpus;
using GpuExecutor.Outcomes;
using GpuExecutor.Registration;
using GpuExecutor.Storage;

namespace GpuExecutor.Doctor;

[JsonConverter(typeof(JsonStringEnumConverter<DoctorStatus>))]
public enum DoctorStatus
{
    [JsonStringEnumMemberName("pass")] Pass,
    [JsonStringEnumMemberName("warn")] Warn,
    [JsonStringEnumMemberName("fail")] Fail,
}

/// <summary>One link of the chain a job depends on: what was found, and for a warning or failure, the fix.</summary>
public sealed record DoctorFinding(
    [property: JsonPropertyName("check")] string Check,
    [property: JsonPropertyName("status")] DoctorStatus Status,
    [property: JsonPropertyName("found")] string Found,
    [property: JsonPropertyName("fix")] string? Fix = null);

[JsonSerializable(typeof(List<DoctorFinding>))]
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
public sealed partial class DoctorJsonContext : JsonSerializerContext;

/// <summary>
/// `doctor`: checks every link a job on this host depends on, in the order a job meets them,
/// and says for each what it found and how to fix it. It changes nothing but a probe object in
/// the checkpoint store (under a doctor-only prefix, deleted again) and probe files it removes.
/// </summary>
public sealed class HostDoctor(
    ExecutorConfig config,
    IContainerDriver docker,
    IGpuInventory gpus,
    IObjectStoreOpener stores,
    Func<ContinuationSettings, IGitLabJobs> openGitLab,
    Func<string, ExecutorConfig> loadExecutorConfig)
{
    /// <summary>Where the checkpoint store probe writes, under checkpoints.prefix: no run key can start with a dot.</summary>
    public const string ProbePrefix = ".gpu-executor-doctor/";

    /// <summary>
    /// The most one group of checks may take: a daemon, store or GitLab that never answers is a
    /// failed check after this long, not a doctor that hangs (the SDKs' own timeouts run to minutes).
    /// </summary>
    public static readonly TimeSpan CheckTimeout = TimeSpan.FromSeconds(30);

    public async Task<IReadOnlyList<DoctorFinding>> CheckAsync(string? runnerConfigPath, string thisBinary, CancellationToken cancellationToken)
    {
        var findings = new List<DoctorFinding>();
        EngineDescription? engine = null;
        await BoundedAsync(findings, "docker", async token => engine = await CheckDockerAsync(findings, token), cancellationToken);
        await BoundedAsync(findings, "gpus", token => CheckGpusAsync(findings, engine, token), cancellationToken);
        CheckDirectories(findings);
        await BoundedAsync(findings, "stores", token => CheckStoresAsync(findings, token), cancellationToken);
        await BoundedAsync(findings, "gitlab", token => CheckGitLabAsync(findings, token), cancellationToken);
        if (runnerConfigPath is not null)
            CheckRunnerConfig(findings, runnerConfigPath, thisBinary);
        return findings;
    }

    private static async Task BoundedAsync(List<DoctorFinding> findings, string check, Func<CancellationToken, Task> run, CancellationToken cancellationToken)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(CheckTimeout);
        try
        {
            await run(limit.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            findings.Add(new(check, DoctorStatus.Fail, $"no answer within {CheckTimeout.TotalSeconds:0} s", $"find out why the {check} check hangs: a daemon, a store or a server that accepts connections and never answers"));
        }
    }

    private async Task<EngineDescription?> CheckDockerAsync(List<DoctorFinding> findings, CancellationToken cancellationToken)
    {
        EngineDescription engine;
        try
        {
            engine = await docker.DescribeAsync(cancellationToken);
        }
        catch (SystemFailureException error)
        {
            findings.Add(new("docker", DoctorStatus.Fail, error.Message,
                $"start dockerd (systemctl start docker), or point [docker].endpoint at the daemon ({config.Docker.Endpoint} now)"));
            return null;
        }
        findings.Add(new("docker", DoctorStatus.Pass, $"Docker {engine.Version} (API {engine.ApiVersion}) at {config.Docker.Endpoint}"));
        findings.Add(engine.LiveRestore
            ? new("docker live-restore", DoctorStatus.Pass, "on: a daemon restart leaves running jobs running")
            : new("docker live-restore", DoctorStatus.Warn, "off: a daemon restart kills every running job (each becomes a system failure and resumes from its last checkpoint)",
                "set \"live-restore\": true in /etc/docker/daemon.json and reload dockerd (systemctl reload docker)"));
        return engine;
    }

    private async Task CheckGpusAsync(List<DoctorFinding> findings, EngineDescription? engine, CancellationToken cancellationToken)
    {
        var settings = config.Gpus;
        if (settings.Mode == GpuMode.Nvidia)
            findings.Add(NvidiaRuntime(engine));

        IReadOnlyList<GpuDevice> inventory;
        try
        {
            inventory = await gpus.QueryAsync(cancellationToken);
        }
        catch (SystemFailureException error)
        {
            var needed = settings.Mode == GpuMode.Nvidia || settings.DefaultCount > 0 || settings.Pool.Count > 0;
            findings.Add(new("gpus", needed ? DoctorStatus.Fail : DoctorStatus.Warn, error.Message,
                needed ? $"install the NVIDIA driver, or set [gpus].nvidia_smi (now \"{settings.NvidiaSmi}\") to its nvidia-smi"
                       : "jobs asking for GPUs will fail; set gpus.mode = \"none\" only on hosts meant to run CPU jobs"));
            return;
        }

        var missing = settings.Pool.Where(entry => !inventory.Any(gpu => gpu.Uuid == entry || gpu.Index.ToString(CultureInfo.InvariantCulture) == entry)).ToList();
        var pool = GpuAllocator.InPool(settings, inventory);
        if (missing.Count > 0)
            findings.Add(new("gpus", DoctorStatus.Fail, $"gpus.pool names {string.Join(", ", missing)}, which nvidia-smi does not list (it lists {inventory.Count})",
                "correct [gpus].pool to indexes or UUIDs that `nvidia-smi -L` shows"));
        else
            findings.Add(new("gpus", pool.Count > 0 || settings.DefaultCount == 0 ? DoctorStatus.Pass : DoctorStatus.Fail,
                $"nvidia-smi lists {inventory.Count} GPU(s); the pool holds {pool.Count}: {string.Join(", ", pool.GroupBy(gpu => gpu.Name).Select(group => $"{group.Count()} × {group.Key}"))}",
                pool.Count > 0 || settings.DefaultCount == 0 ? null : "the pool is empty but gpus.default_count asks for GPUs: fix [gpus].pool"));

        IReadOnlyDictionary<string, GpuHolder>? holders = null;
        if (engine is not null)
        {
            try
            {
                holders = await GpuLedger.ReadAsync(docker, cancellationToken);
            }
            catch (SystemFailureException)
            {
                // The docker line above already says why; the busy check then goes by memory alone.
            }
        }
        var busy = pool.Where(gpu => gpu.MemoryUsedMiB > settings.BusyMemoryMiB && holders?.ContainsKey(gpu.Uuid) != true).ToList();
        findings.Add(busy.Count == 0
            ? new("gpus busy", DoctorStatus.Pass, $"no pool GPU is busy outside a job (busy: more than {settings.BusyMemoryMiB} MiB in use)")
            : new("gpus busy", DoctorStatus.Fail,
                $"busy outside any job: {string.Join(", ", busy.Select(gpu => $"GPU {gpu.Index} ({gpu.MemoryUsedMiB} MiB in use)"))}{(holders is null ? " (no ledger: Docker is down, so a job's GPU cannot be told apart)" : "")}; jobs will not get them",
                "find the processes with `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name --format=csv` and stop them, or take those GPUs out of [gpus].pool"));
    }

    /// <summary>
    /// Docker serves a device request with driver "nvidia" through the NVIDIA Container Toolkit's
    /// hook; newer daemons can use its CDI specs or its "nvidia" runtime instead.
    /// </summary>
    private static DoctorFinding NvidiaRuntime(EngineDescription? engine)
    {
        var hook = new[] { "/usr/bin", "/usr/local/bin", "/usr/sbin" }.Select(directory => Path.Combine(directory, "nvidia-container-runtime-hook")).FirstOrDefault(File.Exists);
        var cdiSpecs = new[] { "/etc/cdi", "/var/run/cdi" }.Where(Directory.Exists)
            .SelectMany(directory => Directory.EnumerateFiles(directory))
            .Where(file => file.Contains("nvidia", StringComparison.OrdinalIgnoreCase)).ToList();
        var runtime = engine?.Runtimes.Contains("nvidia") == true;
        if (hook is not null || runtime || cdiSpecs.Count > 0)
            return new("nvidia runtime", DoctorStatus.Pass, string.Join("; ", new[]
            {
                hook is null ? null : $"NVIDIA Container Toolkit hook {hook}",
                runtime ? "the daemon has the \"nvidia\" runtime" : null,
                cdiSpecs.Count > 0 ? $"CDI specs {string.Join(", ", cdiSpecs)}" : null,
            }.OfType<string>()));
        return new("nvidia runtime", DoctorStatus.Fail, "no NVIDIA Container Toolkit: no nvidia-container-runtime-hook, no \"nvidia\" runtime in the daemon, no CDI spec; containers cannot be given GPUs",
            "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`, or set gpus.mode = \"none\" on a host without GPUs");
    }

    private void CheckDirectories(List<DoctorFinding> findings)
    {
        var directories = new (string Name, string Path)[]
        {
            ("state_dir", config.StateDir),
            ("builds.host_dir", config.Builds.HostDir),
            ("cache.host_dir", config.Cache.HostDir),
            ("dataset cache", Path.Combine(config.StateDir, "datasets")),
            ("checkpoint work", Path.Combine(config.StateDir, "checkpoints")),
        };
        foreach (var (name, path) in directories)
        {
            var problem = WritableProblem(path);
            findings.Add(problem is null
                ? new(name, DoctorStatus.Pass, $"{path} is writable{FreeSpace(path)}")
                : new(name, DoctorStatus.Fail, $"{path} is not writable: {problem}",
                    $"create it for the user the runner runs as (install -d -m 0750 {path}), or point the config elsewhere"));
        }

        // node_exporter's textfile directory is node_exporter's to create: a missing one means
        // it is not installed, or is pointed elsewhere, and nobody would read the file.
        if (config.Metrics.TextfileDir is { } textfiles)
        {
            findings.Add(!Directory.Exists(textfiles)
                ? new("metrics.textfile_dir", DoctorStatus.Fail, $"{textfiles} does not exist",
                    "install node_exporter (Debian: prometheus-node-exporter, whose textfile collector reads /var/lib/prometheus/node-exporter), or point metrics.textfile_dir at its --collector.textfile.directory")
                : WritableProblem(textfiles) is { } problem
                    ? new("metrics.textfile_dir", DoctorStatus.Fail, $"{textfiles} is not writable: {problem}", $"let the user the runner runs as write {textfiles}")
                    : new("metrics.textfile_dir", DoctorStatus.Pass, $"{textfiles} is writable: gpu_executor.prom is written there"));
        }

        if (config.Datasets.CacheMaxBytes is { } cap && NearestExisting(Path.Combine(config.StateDir, "datasets")) is { } existing)
        {
            var free = new DriveInfo(existing).AvailableFreeSpace;
            var cached = DirectorySize(Path.Combine(config.StateDir, "datasets"));
            findings.Add(free + cached >= cap
                ? new("dataset cache size", DoctorStatus.Pass, $"datasets.cache_max_size {Gib(cap)} fits: {Gib(cached)} cached, {Gib(free)} free")
                : new("dataset cache size", DoctorStatus.Warn, $"datasets.cache_max_size is {Gib(cap)}, but the disk holds only {Gib(cached)} cached + {Gib(free)} free: fetches will fail with a full disk before eviction starts",
                    $"lower datasets.cache_max_size below {Gib(free + cached)}, or give state_dir a bigger disk"));
        }
    }

    /// <summary>Null when a file can be made in the directory (or in the nearest existing parent, for one not made yet).</summary>
    private static string? WritableProblem(string path)
    {
        var existing = NearestExisting(path);
        if (existing is null)
            return "no parent of it exists";
        if (!Directory.Exists(existing))
            return $"{existing} is a file, not a directory";
        var probe = Path.Combine(existing, $".gpu-executor-doctor-{Environment.ProcessId}");
        try
        {
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
            return null;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return error.Message;
        }
    }

    private static string? NearestExisting(string path)
    {
        for (var current = Path.GetFullPath(path); !string.IsNullOrEmpty(current); current = Path.GetDirectoryName(current))
        {
            if (Directory.Exists(current) || File.Exists(current))
                return current;
        }
        return null;
    }

    private static string FreeSpace(string path)
    {
        try
        {
            return NearestExisting(path) is { } existing && Directory.Exists(existing) ? $", {Gib(new DriveInfo(existing).AvailableFreeSpace)} free" : "";
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return "";
        }
    }

    private static long DirectorySize(string path)
    {
        try
        {
            return Directory.Exists(path)
                ? new DirectoryInfo(path).EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint }).Sum(file => file.Length)
                : 0;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    private static string Gib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1073741824.0:0.0} GiB");

    private async Task CheckStoresAsync(List<DoctorFinding> findings, CancellationToken cancellationToken)
    {
        foreach (var store in config.Stores.Values.OrderBy(store => store.Name, StringComparer.Ordinal))
        {
            if (store.Allow.Count == 0)
            {
                findings.Add(new($"store {store.Name}", DoctorStatus.Warn, "its allow list is empty: no job can read a dataset from it", $"list the buckets jobs may read in [stores.{store.Name}].allow"));
                continue;
            }
            using var opened = stores.Open(store);
            foreach (var allowed in store.Allow)
            {
                var slash = allowed.IndexOf('/', StringComparison.Ordinal);
                var (bucket, prefix) = slash < 0 ? (allowed, "") : (allowed[..slash], allowed[(slash + 1)..]);
                try
                {
                    await using var listing = opened.ListAsync(bucket, prefix, cancellationToken).GetAsyncEnumerator(cancellationToken);
                    var any = await listing.MoveNextAsync();
                    findings.Add(new($"store {store.Name}", DoctorStatus.Pass, $"{bucket}/{prefix} can be listed{(any ? "" : " (it is empty)")}"));
                }
                catch (SystemFailureException error)
                {
                    findings.Add(new($"store {store.Name}", DoctorStatus.Fail, $"{bucket}/{prefix} cannot be listed: {error.Message}", StoreFix(store)));
                }
            }
        }

        var checkpointStore = config.Checkpoints.StoreOrLocal(config.StateDir);
        using var checkpoints = stores.Open(checkpointStore);
        var bucketName = config.Checkpoints.Bucket;
        var key = $"{config.Checkpoints.Prefix}{ProbePrefix}{config.HostName}-{Environment.ProcessId}";
        var name = $"checkpoint store ({checkpointStore.Name})";
        try
        {
            var content = System.Text.Encoding.UTF8.GetBytes($"gpu-executor doctor probe from {config.HostName} at {DateTimeOffset.UtcNow:O}\n");
            await checkpoints.PutBytesAsync(bucketName, key, content, cancellationToken);
            byte[] read;
            await using (var stream = await checkpoints.OpenReadAsync(bucketName, key, 0, null, cancellationToken))
            using (var copy = new MemoryStream())
            {
                await stream.CopyToAsync(copy, cancellationToken);
                read = copy.ToArray();
            }
            await checkpoints.DeleteAsync(bucketName, key, cancellationToken);
            findings.Add(read.AsSpan().SequenceEqual(content)
                ? new(name, DoctorStatus.Pass, $"wrote, read back and deleted {bucketName}/{key}")
                : new(name, DoctorStatus.Fail, $"{bucketName}/{key} read back other bytes than were written", "check the store: a proxy or cache in front of it changes objects"));
        }
        catch (SystemFailureException error)
        {
            findings.Add(new(name, DoctorStatus.Fail, $"the write/read/delete probe under {bucketName}/{config.Checkpoints.Prefix}{ProbePrefix} failed: {error.Message}",
                checkpointStore.Kind == StoreKind.File ? $"make {checkpointStore.Root} writable" : StoreFix(checkpointStore) + $"; the keys need read, write and delete on bucket {bucketName}"));
            return;
        }

        try
        {
            var skewAllowed = config.Checkpoints.LeaseClockSkew;
            if (await checkpoints.ServerTimeAsync(cancellationToken) is not { } serverTime)
            {
                findings.Add(new("clock", DoctorStatus.Pass, "the checkpoint store is on this host: leases have one clock"));
                return;
            }
            // The Date header has whole seconds: a second of that is not the host's error.
            var skew = (DateTimeOffset.UtcNow - serverTime).Duration() - TimeSpan.FromSeconds(1);
            var text = $"this host's clock is {Math.Max(0, skew.TotalSeconds):0} s off the store's (checkpoints.lease_clock_skew_seconds = {skewAllowed.TotalSeconds:0})";
            findings.Add(skew <= skewAllowed / 2 ? new("clock", DoctorStatus.Pass, text)
                : skew <= skewAllowed ? new("clock", DoctorStatus.Warn, text, "turn on time sync (timedatectl set-ntp true): every host sharing the store must agree within the lease skew")
                : new("clock", DoctorStatus.Fail, text + ": run leases would be taken over early or late", "turn on time sync (timedatectl set-ntp true), or raise checkpoints.lease_clock_skew_seconds on every host"));
        }
        catch (SystemFailureException error)
        {
            findings.Add(new("clock", DoctorStatus.Warn, error.Message, "check the store's endpoint from this host"));
        }
    }

    private static string StoreFix(StoreSettings store) =>
        store.AccessKeyId is null
            ? $"give [stores.{store.Name}] access_key_id and secret_access_key, or this host's environment credentials that can read it"
            : $"check [stores.{store.Name}] access_key_id and secret_access_key, its endpoint ({store.Endpoint ?? "AWS " + store.Region}) and the bucket policy";

    private async Task CheckGitLabAsync(List<DoctorFinding> findings, CancellationToken cancellationToken)
    {
        var continuation = config.Continuation;
        if (!continuation.Enabled)
        {
            findings.Add(new("gitlab", DoctorStatus.Pass, "continuation is off ([continuation] gitlab_url and token unset): nothing to reach"));
            return;
        }
        try
        {
            using var gitLab = openGitLab(continuation);
            var user = await gitLab.CurrentUserAsync(cancellationToken);
            findings.Add(new("gitlab", DoctorStatus.Pass, $"{continuation.GitLabUrl} accepts the continuation token (user {user})"));
        }
        catch (GitLabApiException error)
        {
            var rejected = error.Status is System.Net.HttpStatusCode.Unauthorized or System.Net.HttpStatusCode.Forbidden;
            findings.Add(new("gitlab", DoctorStatus.Fail,
                rejected ? $"{continuation.GitLabUrl} refuses the continuation token ({(int)error.Status!})" : $"{continuation.GitLabUrl} cannot be reached: {error.Message}",
                rejected ? "make a token with api scope (Developer role or more) and set [continuation].token" : "check [continuation].gitlab_url and this host's route to it"));
        }
    }

    private void CheckRunnerConfig(List<DoctorFinding> findings, string runnerConfigPath, string thisBinary)
    {
        IReadOnlyList<RunnerEntry> entries;
        try
        {
            entries = RunnerEntry.ParseFile(File.ReadAllText(runnerConfigPath), runnerConfigPath);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or SystemFailureException)
        {
            findings.Add(new("runner config", DoctorStatus.Fail, $"{runnerConfigPath}: {error.Message}", "pass the runner's config.toml (usually /etc/gitlab-runner/config.toml)"));
            return;
        }
        var ours = entries.Where(entry => entry.Runs(thisBinary)).ToList();
        if (ours.Count == 0)
        {
            findings.Add(new("runner config", DoctorStatus.Fail, $"{runnerConfigPath} has {entries.Count} [[runners]] entries, none calling {Path.GetFileName(thisBinary)}",
                "register one with `gpu-executor register`"));
            return;
        }
        var stateDirs = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var entry in ours)
        {
            var configPath = entry.ExecutorConfigPath ?? ExecutorConfig.DefaultPath;
            ExecutorConfig executorConfig;
            try
            {
                executorConfig = loadExecutorConfig(configPath);
            }
            catch (SystemFailureException error)
            {
                findings.Add(new($"runner {entry.Name}", DoctorStatus.Fail, error.Message, "fix the executor config its *_args name"));
                continue;
            }
            (stateDirs.TryGetValue(executorConfig.StateDir, out var names) ? names : stateDirs[executorConfig.StateDir] = []).Add(entry.Name);
            var problems = entry.DisagreementsWith(executorConfig);
            findings.Add(problems.Count == 0
                ? new($"runner {entry.Name}", DoctorStatus.Pass, $"agrees with {configPath} (builds, cache, stages, graceful_kill_timeout {entry.EffectiveGracefulKillTimeout} s)")
                : new($"runner {entry.Name}", DoctorStatus.Fail, string.Join("; ", problems.Select(problem => problem.Problem)), string.Join("; ", problems.Select(problem => problem.Fix))));
        }
        if (stateDirs.Count > 1)
            findings.Add(new("runner state_dir", DoctorStatus.Fail,
                $"the runners' executor configs use {stateDirs.Count} state_dirs ({string.Join("; ", stateDirs.Select(pair => $"{pair.Key}: {string.Join(", ", pair.Value)}"))}): each has its own GPU lock, so two runners can hand out one GPU",
                "give every executor config on the host the same state_dir"));
    }
}
