using GpuExecutor.Checkpoints;
using GpuExecutor.Clocks;
using GpuExecutor.Containers;
using GpuExecutor.Workflows;

namespace GpuExecutor.Tests;

/// <summary>
/// The clocks behind the clock-jump rows of the guarantees table (issue 18): a job's deadline
/// kept on the host's boot clock as well as the wall clock, and final-pass requests that stay
/// ordered when the wall clock goes back. The jumps themselves are in the integration suite's
/// ClockJumpTests, which move the executor's wall clock with libfaketime.
/// </summary>
public sealed class ClockTests
{
    [Theory]
    [InlineData("")]
    [InlineData("no-at-sign")]
    [InlineData("boot@")]
    [InlineData("@12.5")]
    [InlineData("boot@-1")]
    [InlineData("boot@NaN")]
    [InlineData("boot@12@13")]
    [InlineData("boot@1e300")]
    public void A_boot_clock_label_that_is_not_boot_id_at_seconds_is_ignored(string text) =>
        Assert.Null(BootInstant.Parse(text));

    [Fact]
    public void A_boot_instant_reads_back_as_written()
    {
        var instant = new BootInstant("3f1c9a2e-0d4b-4c8e-9a57-1b2c3d4e5f60", 86_400.25);

        Assert.Equal(instant, BootInstant.Parse(instant.ToString()));
    }

    [Fact]
    public void A_deadline_on_this_boots_clock_is_as_far_away_as_it_was_made()
    {
        var deadline = HostDeadline.In(TimeSpan.FromMinutes(10));

        Assert.NotNull(deadline.OnBootClock);
        // /proc/uptime counts in hundredths of a second; the test's own run takes a little too.
        Assert.InRange(deadline.Left, TimeSpan.FromMinutes(10) - TimeSpan.FromSeconds(2), TimeSpan.FromMinutes(10) + TimeSpan.FromSeconds(1));
    }

    [Fact]
    public void A_deadline_from_another_boot_falls_back_to_its_wall_clock_time()
    {
        var wallTime = DateTimeOffset.UtcNow.AddHours(3);
        var deadline = new HostDeadline(wallTime, new BootInstant("another-boot", 5));

        Assert.Equal(wallTime, deadline.Current);
    }

    [Fact]
    public void A_deadline_on_the_boot_clock_wins_over_a_wall_clock_time_that_disagrees()
    {
        // What a container's labels say after the wall clock jumped two hours forward since prepare:
        // the wall-clock deadline has passed, the boot clock's is still ten minutes away.
        var onBootClock = HostDeadline.In(TimeSpan.FromMinutes(10)).OnBootClock;
        var labels = new Dictionary<string, string>
        {
            [JobLabels.Deadline] = DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
            [JobLabels.DeadlineOnBootClock] = onBootClock!.Value.ToString(),
        };

        var deadline = JobLabels.ReadDeadline(labels);

        Assert.NotNull(deadline);
        Assert.InRange(deadline.Value - DateTimeOffset.UtcNow, TimeSpan.FromMinutes(9), TimeSpan.FromMinutes(11));
    }

    [Fact]
    public void Containers_are_labelled_with_their_deadline_on_the_boot_clock()
    {
        var job = new Protocol.JobIdentity(42, 3, "ml/demo", 9, "main", "train", TimeSpan.FromMinutes(20));

        var labels = JobLabels.For(job, JobContainerNames.JobRole, DateTimeOffset.UtcNow);

        Assert.NotNull(BootInstant.Parse(labels[JobLabels.DeadlineOnBootClock]));
        Assert.InRange(JobLabels.ReadDeadline(labels)!.Value - DateTimeOffset.UtcNow, TimeSpan.FromMinutes(19), TimeSpan.FromMinutes(21));
    }

    [Fact]
    public void A_final_pass_request_after_the_wall_clock_went_back_is_still_above_every_earlier_one()
    {
        var root = Directory.CreateTempSubdirectory("gpu-executor-final-pass").FullName;
        try
        {
            var directories = new RunDirectories(root);
            const long jobId = 7;
            // Asked, and answered, when the wall clock was a day ahead of where it is now.
            var earlier = DateTimeOffset.UtcNow.AddDays(1).UtcTicks;
            File.WriteAllText(directories.FinalPassRequest(jobId), earlier.ToString(System.Globalization.CultureInfo.InvariantCulture));

            var next = CheckpointLifecycle.NextFinalPassRequest(directories, jobId);

            Assert.True(next > earlier, $"{next} is not above the earlier request {earlier}");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
