using GpuExecutor.Containers;
using GpuExecutor.Stages;

namespace GpuExecutor.Tests;

public sealed class StageFaultTests
{
    private static ContainerIncidents Quiet => new(OutOfMemoryKills: 0, OutsideKills: 0, Died: false, DiedSeen: false, MemoryLimitBytes: 256L << 20, PidsLimit: 128, ProcessLimitHits: 0);

    [Fact]
    public void An_oom_kill_is_named_with_the_memory_limit()
    {
        var fault = StageFaults.Explain("build_script", new StageResult(137, Stopped: false), Quiet with { OutOfMemoryKills = 2 });

        Assert.NotNull(fault);
        Assert.StartsWith("out of memory:", fault);
        Assert.Contains("256 MiB (container.memory)", fault);
        Assert.Contains("2 times", fault);
        Assert.Contains("the host ran out of memory", StageFaults.Explain("build_script", new StageResult(1, false), Quiet with { OutOfMemoryKills = 1, MemoryLimitBytes = null }));
    }

    [Fact]
    public void The_process_limit_reached_is_named_with_the_limit()
    {
        var fault = StageFaults.Explain("build_script", new StageResult(254, Stopped: false), Quiet with { ProcessLimitHits = 497 });

        Assert.Contains("process limit of 128 tasks (container.pids_limit", fault);
        Assert.Contains("497 times", fault);
    }

    [Fact]
    public void A_killed_wrapper_is_the_jobs_doing_with_its_signal()
    {
        var fault = StageFaults.Explain("build_script", new StageResult(137, Stopped: false) { WrapperKilled = true }, Quiet);

        Assert.Contains("with signal 9", fault);
        Assert.Contains("kill -9 -1", fault);
    }

    [Fact]
    public void A_container_stop_is_the_jobs_only_when_docker_saw_its_end_and_no_outside_kill()
    {
        var stopped = new StageResult(143, Stopped: false, StoppedFromOutside: true);

        Assert.Contains("SIGTERM to the container's main process", StageFaults.Explain("build_script", stopped, Quiet with { Died = true, DiedSeen = true }));
        // docker stop, docker kill or a daemon shutting down: the host's.
        Assert.Null(StageFaults.Explain("build_script", stopped, Quiet with { Died = true, DiedSeen = true, OutsideKills = 1 }));
        // A daemon that restarted lost the events: nobody can say, so the host is blamed.
        Assert.Null(StageFaults.Explain("build_script", stopped, Quiet with { Died = true, DiedSeen = false }));
    }

    [Fact]
    public void A_plain_failure_needs_no_other_word()
    {
        Assert.Null(StageFaults.Explain("build_script", new StageResult(1, Stopped: false), Quiet));
    }

    [Fact]
    public async Task A_stage_that_succeeded_or_was_stopped_is_never_looked_into()
    {
        var driver = new Fakes.FakeContainerDriver { Incidents = Quiet with { OutOfMemoryKills = 1 } };

        Assert.Null(await StageFaults.ExplainAsync(driver, "c", "build_script", DateTimeOffset.UtcNow, new StageResult(0, Stopped: false), TestContext.Current.CancellationToken));
        Assert.Null(await StageFaults.ExplainAsync(driver, "c", "build_script", DateTimeOffset.UtcNow, new StageResult(137, Stopped: true), TestContext.Current.CancellationToken));
        Assert.NotNull(await StageFaults.ExplainAsync(driver, "c", "build_script", DateTimeOffset.UtcNow, new StageResult(137, Stopped: false), TestContext.Current.CancellationToken));
    }

    [Theory]
    [InlineData("8:pids:/docker/abc\n0::/docker/abc", "/sys/fs/cgroup/pids/docker/abc")]
    [InlineData("12:cpu,cpuacct:/x\n5:pids:/system.slice/docker-abc.scope", "/sys/fs/cgroup/pids/system.slice/docker-abc.scope")]
    [InlineData("0::/system.slice/docker-abc.scope", "/sys/fs/cgroup/system.slice/docker-abc.scope")]
    [InlineData("5:pids:/../../etc", null)]
    [InlineData("garbage", null)]
    public void The_pids_cgroup_is_found_in_v1_and_v2_membership_lines(string membership, string? expected)
    {
        Assert.Equal(expected, ContainerCgroup.PidsDirectory(membership.Split('\n')));
    }

    [Fact]
    public void A_flat_keyed_cgroup_file_gives_its_count()
    {
        Assert.Equal(497, ContainerCgroup.CountOf(["max 497"], "max"));
        Assert.Equal(0, ContainerCgroup.CountOf(["other 3", "max x"], "max"));
    }
}
