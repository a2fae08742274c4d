using GpuExecutor.Configuration;
using GpuExecutor.Images;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Tests;

public sealed class ConfigLoaderTests
{
    private const string FullConfig = """
        state_dir = "/srv/gpu-executor"
        host_name = "gpu-host-3"

        [docker]
        endpoint = "unix:///run/docker.sock"

        [images]
        default = "nvcr.io/nvidia/pytorch:24.05-py3"
        allowed = ["nvcr.io/nvidia/**", "pytorch/pytorch:*"]
        pull_policy = "always"
        helper = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.0.0"

        [builds]
        host_dir = "/srv/builds/"
        container_dir = "/builds"

        [cache]
        host_dir = "/srv/cache"
        container_dir = "/cache"

        [container]
        shm_size = "16g"
        network_mode = "bridge"
        cpus = 7.5
        memory = "64g"

        [container.ulimits]
        memlock = -1
        stack = 67108864
        nofile = "1024:65536"

        [run]
        stop_grace_seconds = 45
        stop_signal = "SIGUSR1"

        [cleanup]
        timeout_seconds = 90
        gc_grace_seconds = 600
        remove_builds_dir = false

        [gpus]
        mode = "none"
        nvidia_smi = "/opt/fake/nvidia-smi"
        pool = [0, 1, "GPU-6968dfc2-d444-d92c-c36b-6abe53445cb9"]
        default_count = 1
        max_count = 4
        busy_memory_mib = 2048
        wait_timeout_seconds = 600

        [datasets]
        cache_max_size = "2t"
        """;

    [Fact]
    public void Containers_are_hardened_unless_the_config_says_otherwise()
    {
        var defaults = ConfigLoader.Parse("", "test.toml").Container;
        Assert.True(defaults.NoNewPrivileges);
        Assert.Equal(ContainerDefaults.ReviewedCapabilities, defaults.Capabilities);
        Assert.DoesNotContain("NET_RAW", defaults.Capabilities);
        Assert.DoesNotContain("MKNOD", defaults.Capabilities);
        Assert.Equal(ContainerDefaults.DefaultPidsLimit, defaults.PidsLimit);

        var relaxed = ConfigLoader.Parse("[container]\nno_new_privileges = false\ncapabilities = [\"CAP_CHOWN\", \"NET_RAW\", \"CHOWN\"]\npids_limit = \"unlimited\"", "test.toml").Container;
        Assert.False(relaxed.NoNewPrivileges);
        Assert.Equal(["CHOWN", "NET_RAW"], relaxed.Capabilities);
        Assert.Null(relaxed.PidsLimit);

        Assert.Empty(ConfigLoader.Parse("[container]\ncapabilities = []", "test.toml").Container.Capabilities);
        Assert.Equal(256, ConfigLoader.Parse("[container]\npids_limit = 256", "test.toml").Container.PidsLimit);
    }

    [Fact]
    public void Every_key_of_a_full_config_is_read()
    {
        var config = ConfigLoader.Parse(FullConfig, "test.toml");

        Assert.Equal("/srv/gpu-executor", config.StateDir);
        Assert.Equal("gpu-host-3", config.HostName);
        Assert.Equal("unix:///run/docker.sock", config.Docker.Endpoint);
        Assert.Equal("nvcr.io/nvidia/pytorch:24.05-py3", config.Images.Default);
        Assert.Equal(["nvcr.io/nvidia/**", "pytorch/pytorch:*"], config.Images.Allowed);
        Assert.Equal(PullPolicy.Always, config.Images.PullPolicy);
        Assert.StartsWith("registry.gitlab.com/", config.Images.Helper);
        Assert.Equal(new MountSettings("/srv/builds", "/builds"), config.Builds);
        Assert.Equal(new MountSettings("/srv/cache", "/cache"), config.Cache);
        Assert.Equal(16L << 30, config.Container.ShmSizeBytes);
        Assert.Equal("bridge", config.Container.NetworkMode);
        Assert.Equal(7.5, config.Container.Cpus);
        Assert.Equal(64L << 30, config.Container.MemoryBytes);
        Assert.Contains(new Ulimit("memlock", -1, -1), config.Container.Ulimits);
        Assert.Contains(new Ulimit("stack", 67108864, 67108864), config.Container.Ulimits);
        Assert.Contains(new Ulimit("nofile", 1024, 65536), config.Container.Ulimits);
        Assert.Equal(TimeSpan.FromSeconds(45), config.Run.StopGracePeriod);
        Assert.Equal("USR1", config.Run.StopSignal);
        Assert.Equal(TimeSpan.FromSeconds(90), config.Cleanup.Timeout);
        Assert.Equal(TimeSpan.FromSeconds(600), config.Cleanup.GcGracePeriod);
        Assert.False(config.Cleanup.RemoveBuildsDir);
        Assert.Equal(GpuMode.None, config.Gpus.Mode);
        Assert.Equal("/opt/fake/nvidia-smi", config.Gpus.NvidiaSmi);
        Assert.Equal(["0", "1", "GPU-6968dfc2-d444-d92c-c36b-6abe53445cb9"], config.Gpus.Pool);
        Assert.Equal(1, config.Gpus.DefaultCount);
        Assert.Equal(4, config.Gpus.MaxCount);
        Assert.Equal(2048, config.Gpus.BusyMemoryMiB);
        Assert.Equal(TimeSpan.FromMinutes(10), config.Gpus.WaitTimeout);
        Assert.Equal(2L << 40, config.Datasets.CacheMaxBytes);
    }

    [Fact]
    public void An_empty_config_gives_the_documented_defaults()
    {
        var config = ConfigLoader.Parse("", "empty.toml");

        Assert.Equal("/var/lib/gpu-executor", config.StateDir);
        Assert.Equal(Environment.MachineName, config.HostName);
        Assert.Equal("unix:///var/run/docker.sock", config.Docker.Endpoint);
        Assert.Equal(PullPolicy.IfNotPresent, config.Images.PullPolicy);
        Assert.Empty(config.Images.Allowed);
        Assert.Equal("/builds", config.Builds.ContainerDir);
        Assert.Equal(TimeSpan.FromSeconds(30), config.Run.StopGracePeriod);
    }

    [Theory]
    [InlineData("[images]\npull_policy = \"sometimes\"", "images.pull_policy")]
    [InlineData("[logs]\njob_log_budget = \"16k\"", "logs.job_log_budget")]
    [InlineData("[logs]\nkeep_patterns = [\"(a)\\\\1\"]", "logs.keep_patterns")]
    [InlineData("[logs]\nkeep_patterns = [\"(?<=x)y\"]", "logs.keep_patterns")]
    [InlineData("[logs]\nsample_one_in = 0", "logs.sample_one_in")]
    [InlineData("[metrics]\ntextfile_dir = \"relative/dir\"", "metrics.textfile_dir")]
    [InlineData("[images]\nallowed = \"ubuntu\"", "images.allowed")]
    [InlineData("[images]\nallowed = [\"ubuntu\", \"bad pattern!\"]", "images.allowed[1]")]
    [InlineData("[images]\ndefault = \"UPPER/case\"", "images.default")]
    [InlineData("[builds]\nhost_dir = \"relative/builds\"", "builds.host_dir")]
    [InlineData("[builds]\nhost_dir = \"/srv/../etc\"", "builds.host_dir")]
    [InlineData("[cache]\ncontainer_dir = \"/builds\"", "cache.container_dir")]
    [InlineData("[docker]\nendpoint = \"ftp://host\"", "docker.endpoint")]
    [InlineData("[container]\nshm_size = \"lots\"", "container.shm_size")]
    [InlineData("[container]\nipc_mode = \"host\"\nshm_size = \"1g\"", "container.shm_size")]
    [InlineData("[container]\nipc_mode = \"sideways\"", "container.ipc_mode")]
    [InlineData("[container]\ncpus = 0", "container.cpus")]
    [InlineData("[container]\nmemory = \"1m\"", "container.memory")]
    [InlineData("[container]\nnetwork_mode = \"bad name!\"", "container.network_mode")]
    [InlineData("[container.ulimits]\nmemlok = 1", "container.ulimits.memlok")]
    [InlineData("[container]\nprivileged = true", "container.privileged")]
    [InlineData("[container]\nvolumes = [\"/var/run/docker.sock:/var/run/docker.sock\"]", "container.volumes")]
    [InlineData("[container]\ndevices = [\"/dev/mem\"]", "container.devices")]
    [InlineData("[container]\ncapabilities = [\"SYS_ADMIN\"]", "container.capabilities")]
    [InlineData("[container]\ncapabilities = [\"CAP_FLY\"]", "container.capabilities")]
    [InlineData("[container]\ncapabilities = \"CHOWN\"", "container.capabilities")]
    [InlineData("[container]\npids_limit = 10", "container.pids_limit")]
    [InlineData("[container]\npids_limit = \"lots\"", "container.pids_limit")]
    [InlineData("[container]\nno_new_privileges = \"yes\"", "container.no_new_privileges")]
    [InlineData("[container.ulimits]\nnofile = \"2048:1024\"", "container.ulimits.nofile")]
    [InlineData("[run]\nstop_signal = \"KILL\"", "run.stop_signal")]
    [InlineData("[run]\nstop_grace_seconds = -1", "run.stop_grace_seconds")]
    [InlineData("[cleanup]\nremove_builds_dir = \"yes\"", "cleanup.remove_builds_dir")]
    [InlineData("statedir = \"/x\"", "statedir")]
    [InlineData("host_name = \"../other\"", "host_name")]
    [InlineData("host_name = \"\"", "host_name")]
    [InlineData("[images]\npul_policy = \"never\"", "images.pul_policy")]
    [InlineData("docker = 3", "docker")]
    [InlineData("[gpus]\nmode = \"cuda\"", "gpus.mode")]
    [InlineData("[datasets]\ncache_max_size = \"lots\"", "datasets.cache_max_size")]
    [InlineData("[datasets]\ncache_size = \"1t\"", "datasets.cache_size")]
    [InlineData("[gpus]\nnvidia_smi = \"bin/nvidia-smi\"", "gpus.nvidia_smi")]
    [InlineData("[gpus]\npool = [\"gpu0\"]", "gpus.pool")]
    [InlineData("[gpus]\npool = [-1]", "gpus.pool")]
    [InlineData("[gpus]\ndefault_count = -1", "gpus.default_count")]
    [InlineData("[gpus]\nmax_count = 0", "gpus.max_count")]
    [InlineData("[gpus]\nmax_count = 2\ndefault_count = 4", "gpus.default_count")]
    [InlineData("[gpus]\nbusy_memory_mib = \"1g\"", "gpus.busy_memory_mib")]
    [InlineData("[checkpoints]\nstore = \"nowhere\"", "checkpoints.store")]
    [InlineData("[checkpoints]\nbucket = \"Bad_Bucket\"", "checkpoints.bucket")]
    [InlineData("[checkpoints]\nprefix = \"../up/\"", "checkpoints.prefix")]
    [InlineData("[checkpoints]\nprefix = \"no-slash\"", "checkpoints.prefix")]
    [InlineData("[checkpoints]\ncontainer_dir = \"relative\"", "checkpoints.container_dir")]
    [InlineData("[checkpoints]\nkeep_generations = 0", "checkpoints.keep_generations")]
    [InlineData("[checkpoints]\nquiet_seconds = -5", "checkpoints.quiet_seconds")]
    [InlineData("[checkpoints]\nkeep = 3", "checkpoints.keep")]
    [InlineData("[checkpoints]\ncontainer_dir = \"/builds/ckpt\"", "checkpoints.container_dir")]
    [InlineData("[run]\nstop_grace_seconds = 500\n[checkpoints]\nfinal_commit_wait_seconds = 120", "run.stop_grace_seconds")]
    [InlineData("[run]\nrunner_graceful_kill_timeout_seconds = 60", "run.stop_grace_seconds")]
    public void A_bad_value_is_refused_with_an_error_naming_its_key(string toml, string key)
    {
        var error = Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse(toml, "bad.toml"));

        Assert.Equal(key, error.Key);
        Assert.StartsWith($"config key '{key}':", error.Message);
    }

    [Fact]
    public void Invalid_toml_is_a_system_failure_that_names_the_file()
    {
        var error = Assert.Throws<SystemFailureException>(() => ConfigLoader.Parse("[images\nx = = 1", "/etc/gpu-executor/config.toml"));

        Assert.Contains("/etc/gpu-executor/config.toml", error.Message);
        Assert.Contains("not valid TOML", error.Message);
    }

    [Fact]
    public void A_missing_config_file_says_how_to_point_at_one()
    {
        var error = Assert.Throws<SystemFailureException>(() => ConfigLoader.LoadFile("/nonexistent/gpu-executor.toml"));

        Assert.Contains("/nonexistent/gpu-executor.toml", error.Message);
        Assert.Contains("--config", error.Message);
    }

    [Fact]
    public void The_stream_keys_are_read_and_a_rate_too_low_to_be_meant_is_refused()
    {
        var config = ConfigLoader.Parse("[datasets]\nstream_first_objects = 8\nstream_first_size = \"1g\"\nstream_parallel_objects = 2\nstream_max_rate = \"200m\"\n", "test.toml");

        Assert.Equal((8, 1L << 30, 2, 200L << 20), (config.Datasets.StreamFirstObjects, config.Datasets.StreamFirstBytes, config.Datasets.StreamParallelObjects, config.Datasets.StreamMaxBytesPerSecond));
        var error = Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse("[datasets]\nstream_max_rate = \"100k\"\n", "test.toml"));
        Assert.Contains("datasets.stream_max_rate", error.Message);
        Assert.Throws<ConfigurationException>(() => ConfigLoader.Parse("[datasets]\nstream_parallel_objects = 65\n", "test.toml"));
    }

    [Fact]
    public void The_example_config_in_the_repository_is_valid()
    {
        var example = Path.Combine(RepositoryRoot.Path, "config.toml.example");
        var text = File.ReadAllText(example);
        // The runner's own [[runners]] section lives in the same file as a comment block; only
        // the executor's part is TOML for us.
        var config = ConfigLoader.Parse(text, example);

        // The package installs it as the host's config: what it sets are the defaults that work
        // on a fresh host, and the examples to adapt (a pool, a CPU limit) stay comments.
        var defaults = new ExecutorConfig();
        Assert.Equal(
            (defaults.StateDir, defaults.Docker.Endpoint, defaults.Gpus.Mode, defaults.Gpus.DefaultCount, defaults.Gpus.Pool.Count, defaults.Container.Cpus, defaults.Images.Allowed.Count, defaults.Images.Helper, defaults.Datasets.CacheMaxBytes),
            (config.StateDir, config.Docker.Endpoint, config.Gpus.Mode, config.Gpus.DefaultCount, config.Gpus.Pool.Count, config.Container.Cpus, config.Images.Allowed.Count, config.Images.Helper, config.Datasets.CacheMaxBytes));
        Assert.Equal((defaults.Run, defaults.Cleanup), (config.Run, config.Cleanup));
    }
}

internal static class RepositoryRoot
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(System.IO.Path.Combine(directory.FullName, "GpuExecutor.sln")))
            directory = directory.Parent;
        return directory?.FullName ?? throw new InvalidOperationException("GpuExecutor.sln not found above the test binaries.");
    }
}
