using GpuExecutor.Configuration;
using GpuExecutor.Containers;

namespace GpuExecutor.Tests;

public sealed class DockerSpecConverterTests
{
    [Fact]
    public void A_spec_becomes_a_create_request_with_labels_mounts_and_limits()
    {
        var spec = new ContainerSpec(
            "gpu-executor-7-job",
            "trainer:1",
            StageServer.Command,
            new Dictionary<string, string> { [JobLabels.Managed] = "true", [JobLabels.JobId] = "7" },
            [new BindMount("/srv/builds/job-7", "/builds", false), new BindMount("/srv/data,with:odd", "/data", true)],
            new Dictionary<string, string> { ["A"] = "b=c" },
            new ContainerDefaults
            {
                ShmSizeBytes = 1L << 30,
                IpcMode = "private",
                NetworkMode = "none",
                Cpus = 2.5,
                MemoryBytes = 8L << 30,
                Ulimits = [new Ulimit("memlock", -1, -1), new Ulimit("nofile", 1024, 4096)],
            },
            WorkingDir: null);

        var request = DockerSpecConverter.ToCreateParameters(spec);

        Assert.Equal("gpu-executor-7-job", request.Name);
        Assert.Equal("trainer:1", request.Image);
        Assert.Equal(StageServer.Command, request.Cmd);
        Assert.Empty(request.Entrypoint);
        Assert.Equal("true", request.Labels[JobLabels.Managed]);
        Assert.Equal(["A=b=c"], request.Env);
        Assert.Collection(request.HostConfig.Mounts,
            mount => Assert.Equal(("bind", "/srv/builds/job-7", "/builds", false), (mount.Type, mount.Source, mount.Target, mount.ReadOnly)),
            mount => Assert.Equal(("bind", "/srv/data,with:odd", "/data", true), (mount.Type, mount.Source, mount.Target, mount.ReadOnly)));
        Assert.Equal(1L << 30, request.HostConfig.ShmSize);
        Assert.Equal("private", request.HostConfig.IpcMode);
        Assert.Equal("none", request.HostConfig.NetworkMode);
        Assert.Equal(2_500_000_000, request.HostConfig.NanoCPUs);
        Assert.Equal(8L << 30, request.HostConfig.Memory);
        Assert.Collection(request.HostConfig.Ulimits,
            limit => Assert.Equal(("memlock", -1L, -1L), (limit.Name, limit.Soft, limit.Hard)),
            limit => Assert.Equal(("nofile", 1024L, 4096L), (limit.Name, limit.Soft, limit.Hard)));
    }

    [Fact]
    public void A_job_container_is_hardened_and_runs_the_stage_server_as_its_pid_1()
    {
        var spec = new ContainerSpec("gpu-executor-7-job", "trainer:1", StageServer.Command, new Dictionary<string, string>(), [], new Dictionary<string, string>(), new ContainerDefaults { PidsLimit = 512 }, WorkingDir: null);

        var request = DockerSpecConverter.ToCreateParameters(spec);

        Assert.False(request.HostConfig.Init);
        Assert.False(request.HostConfig.Privileged);
        Assert.Equal(["ALL"], request.HostConfig.CapDrop);
        Assert.Equal(ContainerDefaults.ReviewedCapabilities, request.HostConfig.CapAdd);
        Assert.Equal(["no-new-privileges:true"], request.HostConfig.SecurityOpt);
        Assert.Equal(512, request.HostConfig.PidsLimit);
        Assert.Empty(request.HostConfig.Binds ?? []);

        var relaxed = DockerSpecConverter.ToCreateParameters(spec with { Resources = new ContainerDefaults { NoNewPrivileges = false, PidsLimit = null, Capabilities = [] } });
        Assert.Empty(relaxed.HostConfig.SecurityOpt);
        Assert.Equal(-1, relaxed.HostConfig.PidsLimit);
        Assert.Empty(relaxed.HostConfig.CapAdd);
        Assert.Equal(["ALL"], relaxed.HostConfig.CapDrop);
    }

    [Fact]
    public void Helper_stages_go_to_the_helper_container_only_when_one_is_configured()
    {
        Assert.Equal("gpu-executor-5-helper", JobContainerNames.ForStage(5, "get_sources", hasHelper: true));
        Assert.Equal("gpu-executor-5-job", JobContainerNames.ForStage(5, "get_sources", hasHelper: false));
        Assert.Equal("gpu-executor-5-job", JobContainerNames.ForStage(5, "build_script", hasHelper: true));
    }
}
