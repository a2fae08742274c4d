using System.Globalization;
using System.Text.RegularExpressions;
using GpuExecutor.Images;
using GpuExecutor.Outcomes;
using Tomlyn;
using Tomlyn.Model;
using Tomlyn.Serialization;

namespace GpuExecutor.Configuration;

/// <summary>
/// Reads the TOML file into <see cref="ExecutorConfig"/>. Every value is checked here, and every
/// error names the key, so an admin can fix the file from the job log alone. Unknown keys are
/// errors too: a misspelt key silently falling back to a default is worse than a failed job.
/// </summary>
public static partial class ConfigLoader
{
    private static readonly HashSet<string> KnownUlimits = new(StringComparer.Ordinal)
    {
        "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
        "rss", "rtprio", "rttime", "sigpending", "stack",
    };

    private static readonly HashSet<string> IpcModes = new(StringComparer.Ordinal) { "private", "shareable", "host", "none" };

    /// <summary>Signals a training process can reasonably be asked to checkpoint and stop on.</summary>
    public static readonly IReadOnlySet<string> StopSignals = new HashSet<string>(StringComparer.Ordinal)
    {
        "TERM", "INT", "HUP", "QUIT", "USR1", "USR2",
    };

    public static ExecutorConfig LoadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new SystemFailureException($"the executor config '{path}' cannot be read: {error.Message}. Pass --config PATH or create {ExecutorConfig.DefaultPath}.", error);
        }

        return Parse(text, path);
    }

    public static ExecutorConfig Parse(string toml, string sourceName)
    {
        TomlTable root;
        try
        {
            root = TomlSerializer.Deserialize(toml, ConfigTomlContext.Default.TomlTable) ?? new TomlTable();
        }
        catch (TomlException error)
        {
            throw new SystemFailureException($"the executor config '{sourceName}' is not valid TOML: {error.Message}", error);
        }

        var top = new TableReader(root, "");
        var defaults = new ExecutorConfig();
        var stateDir = top.AbsolutePath("state_dir", defaults.StateDir);

        var config = new ExecutorConfig
        {
            StateDir = stateDir,
            HostName = ReadHostName(top),
            Docker = ReadDocker(top.Table("docker")),
            Images = ReadImages(top.Table("images")),
            Builds = ReadMount(top.Table("builds"), defaults.Builds),
            Cache = ReadMount(top.Table("cache"), defaults.Cache),
            Container = ReadContainer(top.Table("container")),
            Run = ReadRun(top.Table("run")),
            Cleanup = ReadCleanup(top.Table("cleanup")),
            Gpus = ReadGpus(top.Table("gpus")),
            Stores = ReadStores(top.Table("stores")),
            Datasets = ReadDatasets(top.Table("datasets")),
        };
        config = config with { Checkpoints = ReadCheckpoints(top.Table("checkpoints"), config.Stores), Continuation = ReadContinuation(top.Table("continuation")), Mlflow = ReadMlflow(top.Table("mlflow")), Telemetry = ReadTelemetry(top.Table("telemetry")), Metrics = ReadMetrics(top.Table("metrics")), Logs = ReadLogs(top.Table("logs")) };
        top.RejectUnknownKeys();

        // Cancel and timeout: the trainer gets the stop grace period, then the agent the final
        // commit wait, and all of it must end before the runner's SIGKILL.
        if (config.Run.StopGracePeriod + config.Checkpoints.FinalCommitWait >= config.Run.RunnerGracefulKillTimeout)
            throw new ConfigurationException("run.stop_grace_seconds",
                $"{config.Run.StopGracePeriod.TotalSeconds:0} s plus checkpoints.final_commit_wait_seconds ({config.Checkpoints.FinalCommitWait.TotalSeconds:0} s) must be less than run.runner_graceful_kill_timeout_seconds ({config.Run.RunnerGracefulKillTimeout.TotalSeconds:0} s, the runner's graceful_kill_timeout), or the runner kills the executor before the last checkpoint is safe.");

        foreach (var (key, other) in new[] { ("builds.container_dir", config.Builds.ContainerDir), ("cache.container_dir", config.Cache.ContainerDir) })
        {
            if (ContainerPaths.Overlap(config.Checkpoints.ContainerDir, other))
                throw new ConfigurationException("checkpoints.container_dir", $"'{config.Checkpoints.ContainerDir}' overlaps {key} ('{other}').");
        }
        if (config.Builds.ContainerDir == config.Cache.ContainerDir)
            throw new ConfigurationException("cache.container_dir", $"must differ from builds.container_dir ('{config.Builds.ContainerDir}').");
        return config;
    }

    private static DockerSettings ReadDocker(TableReader table)
    {
        var endpoint = table.String("endpoint") ?? new DockerSettings().Endpoint;
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("unix" or "tcp" or "http" or "https"))
            throw new ConfigurationException(table.KeyPath("endpoint"), $"'{endpoint}' is not a Docker endpoint; use unix:///var/run/docker.sock or tcp://host:2375.");
        table.RejectUnknownKeys();
        return new DockerSettings { Endpoint = endpoint };
    }

    private static ImageSettings ReadImages(TableReader table)
    {
        var defaultImage = table.String("default") ?? "";
        if (defaultImage.Length > 0 && !ImageReference.IsValid(defaultImage))
            throw new ConfigurationException(table.KeyPath("default"), $"'{defaultImage}' is not a valid image reference.");
        var helper = table.String("helper") ?? "";
        if (helper.Length > 0 && !ImageReference.IsValid(helper))
            throw new ConfigurationException(table.KeyPath("helper"), $"'{helper}' is not a valid image reference.");

        var allowed = table.StringList("allowed");
        for (var index = 0; index < allowed.Count; index++)
        {
            if (!ImageAllowlist.IsValidPattern(allowed[index]))
                throw new ConfigurationException($"{table.KeyPath("allowed")}[{index}]", $"'{allowed[index]}' is not an image pattern; use names like 'nvcr.io/nvidia/pytorch:*' or 'registry.example.com/ml/**'.");
        }

        var pullPolicyText = table.String("pull_policy") ?? "if-not-present";
        var pullPolicy = pullPolicyText switch
        {
            "never" => PullPolicy.Never,
            "if-not-present" => PullPolicy.IfNotPresent,
            "always" => PullPolicy.Always,
            _ => throw new ConfigurationException(table.KeyPath("pull_policy"), $"'{pullPolicyText}' is not one of never, if-not-present, always."),
        };
        table.RejectUnknownKeys();
        return new ImageSettings { Default = defaultImage, Allowed = allowed, PullPolicy = pullPolicy, Helper = helper };
    }

    private static MountSettings ReadMount(TableReader table, MountSettings defaults)
    {
        var hostDir = table.AbsolutePath("host_dir", defaults.HostDir);
        var containerDir = table.AbsolutePath("container_dir", defaults.ContainerDir);
        if (containerDir == "/")
            throw new ConfigurationException(table.KeyPath("container_dir"), "must not be '/'.");
        table.RejectUnknownKeys();
        return new MountSettings(hostDir, containerDir);
    }

    private static ContainerDefaults ReadContainer(TableReader table)
    {
        long? shmSize = null;
        if (table.Raw("shm_size") is { } shmRaw)
            shmSize = table.Size("shm_size", shmRaw);

        var ipcMode = table.String("ipc_mode");
        if (ipcMode is not null && !IpcModes.Contains(ipcMode))
            throw new ConfigurationException(table.KeyPath("ipc_mode"), $"'{ipcMode}' is not one of private, shareable, host, none.");
        if (ipcMode == "host" && shmSize is not null)
            throw new ConfigurationException(table.KeyPath("shm_size"), "has no effect with ipc_mode = \"host\" (the host's /dev/shm is used); remove one of them.");

        var networkMode = table.String("network_mode");
        if (networkMode is not null && !NetworkName().IsMatch(networkMode))
            throw new ConfigurationException(table.KeyPath("network_mode"), $"'{networkMode}' is not a network mode or network name.");

        double? cpus = null;
        if (table.Raw("cpus") is { } cpusRaw)
        {
            cpus = cpusRaw switch
            {
                long whole => whole,
                double fraction => fraction,
                _ => throw new ConfigurationException(table.KeyPath("cpus"), "must be a number of CPUs, such as 8 or 7.5."),
            };
            if (cpus <= 0 || cpus > 4096)
                throw new ConfigurationException(table.KeyPath("cpus"), $"{cpus} is out of range (0, 4096].");
        }

        long? memory = null;
        if (table.Raw("memory") is { } memoryRaw)
        {
            memory = table.Size("memory", memoryRaw);
            if (memory < 6L << 20)
                throw new ConfigurationException(table.KeyPath("memory"), "must be at least 6m; Docker refuses smaller limits.");
        }

        var ulimits = new List<Ulimit>();
        var ulimitTable = table.Table("ulimits");
        foreach (var name in ulimitTable.Keys)
        {
            if (!KnownUlimits.Contains(name))
                throw new ConfigurationException(ulimitTable.KeyPath(name), $"'{name}' is not a ulimit; use one of {string.Join(", ", KnownUlimits.Order())}.");
            ulimits.Add(ParseUlimit(ulimitTable.KeyPath(name), name, ulimitTable.Raw(name)!));
        }
        ulimitTable.RejectUnknownKeys();

        var noNewPrivileges = table.Boolean("no_new_privileges") ?? true;
        var capabilities = table.Raw("capabilities") is null ? ContainerDefaults.ReviewedCapabilities : ReadCapabilities(table);
        long? pidsLimit = ContainerDefaults.DefaultPidsLimit;
        if (table.Raw("pids_limit") is { } pidsRaw)
        {
            // The stage server and the runner's script need a few dozen tasks of their own.
            pidsLimit = pidsRaw is "unlimited" ? null : table.Integer("pids_limit", 0, MinimumPidsLimit, 4_194_304);
        }
        foreach (var refused in RefusedContainerKeys)
        {
            if (table.Raw(refused.Key) is not null)
                throw new ConfigurationException(table.KeyPath(refused.Key), refused.Value);
        }
        table.RejectUnknownKeys();

        return new ContainerDefaults
        {
            ShmSizeBytes = shmSize,
            IpcMode = ipcMode,
            NetworkMode = networkMode,
            Cpus = cpus,
            MemoryBytes = memory,
            Ulimits = ulimits,
            NoNewPrivileges = noNewPrivileges,
            Capabilities = capabilities,
            PidsLimit = pidsLimit,
        };
    }

    private const long MinimumPidsLimit = 64;

    /// <summary>
    /// Keys an admin coming from the docker executor may look for, refused with the reason
    /// instead of "not a known key": each would hand a job the host.
    /// </summary>
    private static readonly Dictionary<string, string> RefusedContainerKeys = new(StringComparer.Ordinal)
    {
        ["privileged"] = "is not supported: a privileged container can load kernel modules, reach every device and escape to the host, and a job's script is untrusted. Add the one capability a job needs to container.capabilities instead.",
        ["volumes"] = "is not supported: a job container mounts its builds, cache, dataset and checkpoint directories only, so no job can reach the host's files or the Docker socket. Share data through [datasets] or the cache directory.",
        ["devices"] = "is not supported: GPUs are given to jobs by the allocator ([gpus]); other host devices are not passed through.",
    };

    private static IReadOnlyList<string> ReadCapabilities(TableReader table)
    {
        var capabilities = new List<string>();
        foreach (var raw in table.StringList("capabilities"))
        {
            var name = raw.StartsWith("CAP_", StringComparison.Ordinal) ? raw[4..] : raw;
            if (!KnownCapabilities.Contains(name))
                throw new ConfigurationException(table.KeyPath("capabilities"), $"'{raw}' is not a Linux capability; use names such as {string.Join(", ", ContainerDefaults.ReviewedCapabilities)}.");
            if (name is "SYS_ADMIN" or "SYS_MODULE" or "SYS_PTRACE" or "SYS_RAWIO" or "DAC_READ_SEARCH" or "SYS_BOOT" or "MAC_ADMIN" or "MAC_OVERRIDE" or "BPF" or "PERFMON" or "SYSLOG")
                throw new ConfigurationException(table.KeyPath("capabilities"), $"'{raw}' is refused: it lets a process in the container reach the host's kernel, memory or files outside its mounts.");
            if (!capabilities.Contains(name))
                capabilities.Add(name);
        }
        return capabilities;
    }

    /// <summary>Linux's capabilities, without the CAP_ prefix (capabilities(7)).</summary>
    private static readonly HashSet<string> KnownCapabilities = new(StringComparer.Ordinal)
    {
        "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
        "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
        "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST",
        "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT",
        "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME",
        "SYS_TTY_CONFIG", "SYSLOG", "WAKE_ALARM",
    };

    private static Ulimit ParseUlimit(string key, string name, object raw)
    {
        // Accepts 8192, -1, "unlimited", or "soft:hard" like `docker run --ulimit`.
        static long? Limit(string text) => text.Trim() switch
        {
            "-1" or "unlimited" => -1,
            var number when long.TryParse(number, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value >= 0 => value,
            _ => null,
        };

        string text = raw switch
        {
            long number => number.ToString(CultureInfo.InvariantCulture),
            string value => value,
            _ => throw new ConfigurationException(key, "must be a number, \"unlimited\" or \"soft:hard\"."),
        };
        var parts = text.Split(':');
        var soft = Limit(parts[0]);
        var hard = parts.Length == 2 ? Limit(parts[1]) : soft;
        if (parts.Length > 2 || soft is null || hard is null)
            throw new ConfigurationException(key, $"'{text}' must be a number, \"unlimited\" or \"soft:hard\".");
        if (hard != -1 && (soft == -1 || soft > hard))
            throw new ConfigurationException(key, $"soft limit exceeds hard limit in '{text}'.");
        return new Ulimit(name, soft.Value, hard.Value);
    }

    private static RunSettings ReadRun(TableReader table)
    {
        var defaults = new RunSettings();
        var grace = table.Seconds("stop_grace_seconds", defaults.StopGracePeriod, maximum: 3600);
        var signal = (table.String("stop_signal") ?? defaults.StopSignal).ToUpperInvariant();
        if (signal.StartsWith("SIG", StringComparison.Ordinal))
            signal = signal[3..];
        if (!StopSignals.Contains(signal))
            throw new ConfigurationException(table.KeyPath("stop_signal"), $"'{signal}' is not one of {string.Join(", ", StopSignals)}.");
        var gracefulKill = table.Seconds("runner_graceful_kill_timeout_seconds", defaults.RunnerGracefulKillTimeout, maximum: 24 * 3600);
        var reconnect = table.Seconds("daemon_reconnect_seconds", defaults.DaemonReconnectWait, maximum: 24 * 3600);
        table.RejectUnknownKeys();
        return new RunSettings { StopGracePeriod = grace, StopSignal = signal, RunnerGracefulKillTimeout = gracefulKill, DaemonReconnectWait = reconnect };
    }

    private static CleanupSettings ReadCleanup(TableReader table)
    {
        var defaults = new CleanupSettings();
        var settings = new CleanupSettings
        {
            Timeout = table.Seconds("timeout_seconds", defaults.Timeout, maximum: 3600),
            GcGracePeriod = table.Seconds("gc_grace_seconds", defaults.GcGracePeriod, maximum: 30L * 24 * 3600),
            RemoveBuildsDir = table.Boolean("remove_builds_dir") ?? defaults.RemoveBuildsDir,
        };
        table.RejectUnknownKeys();
        return settings;
    }

    private static GpuSettings ReadGpus(TableReader table)
    {
        var defaults = new GpuSettings();
        var modeText = table.String("mode") ?? "nvidia";
        var mode = modeText switch
        {
            "nvidia" => GpuMode.Nvidia,
            "none" => GpuMode.None,
            _ => throw new ConfigurationException(table.KeyPath("mode"), $"'{modeText}' is not one of nvidia, none."),
        };
        var nvidiaSmi = table.String("nvidia_smi") ?? defaults.NvidiaSmi;
        if (nvidiaSmi.Length == 0 || nvidiaSmi.Contains('\0') || (nvidiaSmi.Contains('/') && !Path.IsPathRooted(nvidiaSmi)))
            throw new ConfigurationException(table.KeyPath("nvidia_smi"), $"'{nvidiaSmi}' must be a program name or an absolute path.");

        var pool = new List<string>();
        if (table.Raw("pool") is { } poolRaw)
        {
            if (poolRaw is not TomlArray array)
                throw new ConfigurationException(table.KeyPath("pool"), "must be a list of GPU indexes or UUIDs, such as [0, 1] or [\"GPU-…\"].");
            foreach (var item in array)
            {
                pool.Add(item switch
                {
                    long index when index is >= 0 and < 1024 => index.ToString(CultureInfo.InvariantCulture),
                    string uuid when GpuUuid().IsMatch(uuid) => uuid,
                    _ => throw new ConfigurationException(table.KeyPath("pool"), $"'{item}' is neither a GPU index nor a GPU UUID (GPU-… or MIG-…)."),
                });
            }
        }

        var settings = new GpuSettings
        {
            Mode = mode,
            NvidiaSmi = nvidiaSmi,
            Pool = pool,
            DefaultCount = (int)table.Integer("default_count", defaults.DefaultCount, minimum: 0, maximum: 1024),
            MaxCount = table.Raw("max_count") is null ? null : (int)table.Integer("max_count", 0, minimum: 1, maximum: 1024),
            BusyMemoryMiB = table.Integer("busy_memory_mib", defaults.BusyMemoryMiB, minimum: 0, maximum: 1L << 30),
            WaitTimeout = table.Seconds("wait_timeout_seconds", defaults.WaitTimeout, maximum: 7L * 24 * 3600),
        };
        if (settings.MaxCount is { } max && settings.DefaultCount > max)
            throw new ConfigurationException(table.KeyPath("default_count"), $"{settings.DefaultCount} exceeds gpus.max_count ({max}).");
        table.RejectUnknownKeys();
        return settings;
    }

    private static DatasetSettings ReadDatasets(TableReader table)
    {
        var defaults = new DatasetSettings();
        var settings = new DatasetSettings
        {
            CacheMaxBytes = table.Raw("cache_max_size") is { } raw ? table.Size("cache_max_size", raw) : null,
            StreamFirstObjects = (int)table.Integer("stream_first_objects", defaults.StreamFirstObjects, 1, 100_000),
            StreamFirstBytes = table.Raw("stream_first_size") is { } first ? table.Size("stream_first_size", first) : defaults.StreamFirstBytes,
            StreamParallelObjects = (int)table.Integer("stream_parallel_objects", defaults.StreamParallelObjects, 1, 64),
            StreamMaxBytesPerSecond = table.Raw("stream_max_rate") is { } rate ? table.Size("stream_max_rate", rate) : null,
        };
        if (settings.StreamMaxBytesPerSecond is < 1 << 20)
            throw new ConfigurationException(table.KeyPath("stream_max_rate"), "is below 1m (bytes per second): a stream that slow would hold jobs up for no gain.");
        table.RejectUnknownKeys();
        return settings;
    }

    private static CheckpointSettings ReadCheckpoints(TableReader table, IReadOnlyDictionary<string, StoreSettings> stores)
    {
        var defaults = new CheckpointSettings();
        StoreSettings? store = null;
        if (table.String("store") is { } storeName)
        {
            if (!stores.TryGetValue(storeName, out store))
                throw new ConfigurationException(table.KeyPath("store"), $"'{storeName}' is not a store of [stores]; define [stores.{storeName}] or leave store out for the built-in local store under state_dir.");
        }
        var bucket = table.String("bucket") ?? defaults.Bucket;
        if (!CheckpointBucket().IsMatch(bucket))
            throw new ConfigurationException(table.KeyPath("bucket"), $"'{bucket}' is not a bucket name (3-63 of a-z, 0-9, '.', '-').");
        var prefix = table.String("prefix") ?? "";
        if (prefix.Length > 0 && (!CheckpointPrefix().IsMatch(prefix) || prefix.Split('/').Any(segment => segment is "." or "..")))
            throw new ConfigurationException(table.KeyPath("prefix"), $"'{prefix}' is not a key prefix: use letters, digits, '.', '_', '-' and '/', ending with '/'.");
        var containerDir = table.AbsolutePath("container_dir", defaults.ContainerDir);
        if (containerDir == "/")
            throw new ConfigurationException(table.KeyPath("container_dir"), "must not be '/'.");
        var settings = new CheckpointSettings
        {
            Store = store,
            Bucket = bucket,
            Prefix = prefix,
            ContainerDir = containerDir,
            KeepGenerations = (int)table.Integer("keep_generations", defaults.KeepGenerations, 1, 1000),
            QuietPeriod = table.Seconds("quiet_seconds", defaults.QuietPeriod, maximum: 24 * 3600),
            DeadlineMargin = table.Seconds("deadline_margin_seconds", defaults.DeadlineMargin, maximum: 24 * 3600),
            FinalCommitWait = table.Seconds("final_commit_wait_seconds", defaults.FinalCommitWait, maximum: 3600),
            AgentGiveUp = table.Seconds("agent_give_up_seconds", defaults.AgentGiveUp, maximum: 7 * 24 * 3600),
            AgentDaemonLost = table.Seconds("agent_daemon_lost_seconds", defaults.AgentDaemonLost, maximum: 7 * 24 * 3600),
            LeaseTimeToLive = table.Seconds("lease_ttl_seconds", defaults.LeaseTimeToLive, maximum: 24 * 3600),
            LeaseWait = table.Seconds("lease_wait_seconds", defaults.LeaseWait, maximum: 7 * 24 * 3600),
            LeaseClockSkew = table.Seconds("lease_clock_skew_seconds", defaults.LeaseClockSkew, maximum: 3600),
        };
        // The agent renews four times per lifetime, and must get a chance to between its polls.
        if (settings.LeaseTimeToLive < TimeSpan.FromSeconds(8) || settings.LeaseTimeToLive < 4 * settings.PollInterval)
            throw new ConfigurationException(table.KeyPath("lease_ttl_seconds"), $"{settings.LeaseTimeToLive.TotalSeconds:0} is too short: at least 8 s, and four agent polls.");
        table.RejectUnknownKeys();
        return settings;
    }

    /// <summary>A token is sent to this URL: only a plain http(s) base, nothing that could carry credentials or reshape the API path.</summary>
    private static Uri? ReadGitLabUrl(TableReader table)
    {
        if (table.String("gitlab_url") is not { } urlText)
            return null;
        if (!Uri.TryCreate(urlText, UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https") || url.UserInfo.Length > 0 || url.Query.Length > 0 || url.Fragment.Length > 0)
            throw new ConfigurationException(table.KeyPath("gitlab_url"), $"'{urlText}' is not the http(s) URL of a GitLab instance, such as https://gitlab.example.com.");
        return url;
    }

    private static TelemetrySettings ReadTelemetry(TableReader table)
    {
        var defaults = new TelemetrySettings();
        var interval = table.Seconds("gpu_sample_seconds", defaults.GpuSampleInterval, 3600);
        var settings = new TelemetrySettings
        {
            GpuSampleInterval = interval,
            IdleUtilizationPercent = (int)table.Integer("idle_utilization_percent", defaults.IdleUtilizationPercent, 0, 100),
        };
        table.RejectUnknownKeys();
        return settings;
    }

    private static LogSettings ReadLogs(TableReader table)
    {
        var defaults = new LogSettings();
        var budget = table.Raw("job_log_budget") is { } raw ? table.Size("job_log_budget", raw) : defaults.JobLogBudgetBytes;
        if (budget < 64 * 1024)
            throw new ConfigurationException(table.KeyPath("job_log_budget"), "must be at least 64k: the job log needs room for the live output and the notices.");
        // The defaults are known to compile; an admin's own patterns are tried here, so that a bad
        // one fails at load, naming the key, not in the middle of a job.
        var configured = table.Raw("keep_patterns") is not null;
        var patterns = configured ? table.StringList("keep_patterns") : LogSettings.DefaultKeepPatterns;
        foreach (var pattern in configured ? patterns : [])
        {
            try
            {
                if (pattern.Length is 0 or > 200)
                    throw new ArgumentException("1 to 200 characters");
                _ = LogSettings.Compile(pattern);
            }
            catch (Exception error) when (error is ArgumentException or NotSupportedException)
            {
                // NonBacktracking refuses backreferences and lookarounds, with the reason.
                throw new ConfigurationException(table.KeyPath("keep_patterns"), $"'{pattern}' is not a pattern this executor can run in linear time: {error.Message}");
            }
        }
        var settings = new LogSettings
        {
            JobLogBudgetBytes = budget,
            SampleOneIn = (int)table.Integer("sample_one_in", defaults.SampleOneIn, 1, 1_000_000),
            KeepPatterns = patterns,
            HeldBackNoticeInterval = table.Seconds("held_back_notice_seconds", defaults.HeldBackNoticeInterval, 24 * 3600),
            HostKeep = TimeSpan.FromDays(table.Integer("host_keep_days", (long)defaults.HostKeep.TotalDays, 0, 3650)),
        };
        if (settings.HeldBackNoticeInterval <= TimeSpan.Zero)
            throw new ConfigurationException(table.KeyPath("held_back_notice_seconds"), "must be at least 1.");
        table.RejectUnknownKeys();
        return settings;
    }

    private static MetricsSettings ReadMetrics(TableReader table)
    {
        var settings = new MetricsSettings
        {
            TextfileDir = table.String("textfile_dir") is { Length: > 0 } ? table.AbsolutePath("textfile_dir", "/") : null,
        };
        table.RejectUnknownKeys();
        return settings;
    }

    private static MlflowSettings ReadMlflow(TableReader table)
    {
        var defaults = new MlflowSettings();
        var tracking = table.String("tracking") ?? "off";
        if (tracking is not ("off" or "gitlab"))
            throw new ConfigurationException(table.KeyPath("tracking"), $"'{tracking}' is not one of off, gitlab.");
        var tokenVariable = table.String("token_variable") ?? defaults.TokenVariable;
        if (!JobVariableName().IsMatch(tokenVariable))
            throw new ConfigurationException(table.KeyPath("token_variable"), $"'{tokenVariable}' is not a CI/CD variable name (letters, digits and '_').");
        var experiment = table.String("experiment") ?? defaults.Experiment;
        if (experiment.Trim().Length == 0 || experiment.Length > 250 || experiment.Any(char.IsControl))
            throw new ConfigurationException(table.KeyPath("experiment"), "must be 1 to 250 printable characters.");
        var settings = new MlflowSettings { Enabled = tracking == "gitlab", GitLabUrl = ReadGitLabUrl(table), TokenVariable = tokenVariable, Experiment = experiment };
        table.RejectUnknownKeys();
        return settings;
    }

    [System.Text.RegularExpressions.GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]{0,254}$")]
    private static partial System.Text.RegularExpressions.Regex JobVariableName();

    private static ContinuationSettings ReadContinuation(TableReader table)
    {
        var defaults = new ContinuationSettings();
        var url = ReadGitLabUrl(table);
        var token = table.String("token") is { Length: > 0 } text ? new Secret(text) : null;
        if (token is not null && !Secret.CanBeToken(token.Value))
            throw new ConfigurationException(table.KeyPath("token"), "holds whitespace or a control character; paste the token alone.");
        if ((url is null) != (token is null))
            throw new ConfigurationException(table.KeyPath(url is null ? "gitlab_url" : "token"), "gitlab_url and token go together; set both to continue runs through the GitLab API, or neither.");
        var settings = new ContinuationSettings
        {
            GitLabUrl = url,
            Token = token,
            MaxSegments = (int)table.Integer("max_segments", defaults.MaxSegments, 1, 10_000),
            JobEndWait = table.Seconds("job_end_wait_seconds", defaults.JobEndWait, maximum: 24 * 3600),
        };
        table.RejectUnknownKeys();
        return settings;
    }

    /// <summary>
    /// The name this host signs the shared store with. Hosts of one fleet must differ here, or a
    /// run lease held by one looks like the other's own.
    /// </summary>
    private static string ReadHostName(TableReader top)
    {
        var name = top.String("host_name") ?? ExecutorConfig.DefaultHostName();
        if (!HostNames.IsValid(name))
            throw new ConfigurationException(top.KeyPath("host_name"), $"'{name}' is not a host name (letters, digits, '.', '_' and '-', at most 63 characters); set host_name to this host's name in the fleet.");
        return name;
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9.-]{2,62}$")]
    private static partial Regex CheckpointBucket();

    [GeneratedRegex("^[A-Za-z0-9._/-]{0,200}/$")]
    private static partial Regex CheckpointPrefix();

    [GeneratedRegex("^(GPU|MIG)-[0-9a-fA-F-]{8,64}$")]
    private static partial Regex GpuUuid();

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
    private static partial Regex NetworkName();
}

/// <summary>Source-generated so that NativeAOT reads the TOML document model without reflection.</summary>
[TomlSerializable(typeof(TomlTable))]
internal sealed partial class ConfigTomlContext : TomlSerializerContext;
