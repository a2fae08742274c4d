using System.Buffers;
using System.Text;
using GpuExecutor.Jobs;
using GpuExecutor.Stages;

namespace GpuExecutor.Tests;

public sealed class StopSequenceTests : IDisposable
{
    private readonly string _stateDir = Directory.CreateTempSubdirectory("gpu-executor-stop").FullName;
    private readonly List<string> _steps = [];

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);

    private void Record(string step)
    {
        lock (_steps)
            _steps.Add(step);
    }

    /// <summary>
    /// A stage whose processes outlive the stop signal (a trainer still saving) until they are
    /// SIGKILLed, or, with <paramref name="exitsAfterPolls"/>, exit by themselves after that many
    /// looks. Each call is recorded, so the test sees the order in which the stop worked.
    /// </summary>
    private sealed class RecordingStage(Action<string> record, int? exitsAfterPolls = null) : IStageProcesses
    {
        private int _polls;
        private bool _killed;

        public List<string> Signals { get; } = [];

        public Task SignalAsync(string signal)
        {
            Signals.Add(signal);
            if (signal == "KILL")
                _killed = true;
            record(signal == "KILL" ? "kill" : "signal");
            return Task.CompletedTask;
        }

        public Task<bool> AllExitedAsync()
        {
            _polls++;
            record("wait");
            return Task.FromResult(_killed || (exitsAfterPolls is { } polls && _polls >= polls));
        }

        public Task PauseAsync(TimeSpan wait) => Task.Delay(wait);

        public Task<int> ExitCodeAsync(TimeSpan wait) => Task.FromResult(_killed ? 137 : 0);
    }

    private static List<string> Collapsed(IEnumerable<string> steps) =>
        steps.Aggregate(new List<string>(), (collapsed, step) =>
        {
            if (collapsed.Count == 0 || collapsed[^1] != step)
                collapsed.Add(step);
            return collapsed;
        });

    [Fact]
    public async Task A_stop_signals_waits_kills_then_commits_and_only_then_cleanup_removes_the_container()
    {
        var stage = new RecordingStage(Record);
        var sequence = new StopSequence("TERM", TimeSpan.FromMilliseconds(600), _ => { }, () => Record("note-kill"));
        Task? cleanup = null;

        var outcome = await StageLifecycle.RunAsync(
            _stateDir,
            jobId: 42,
            stage: async () =>
            {
                // The runner calls cleanup while run is still stopping the stage (a job timeout).
                cleanup = Task.Run(async () =>
                {
                    await RunLease.WaitUntilReleasedAsync(_stateDir, 42, TimeSpan.FromSeconds(30), _ => { });
                    Record("remove");
                });
                var result = await sequence.RunAsync(stage);
                return new StageResult(result.ExitCode, Stopped: true, result.Killed);
            },
            whileTheContainerStands: async result =>
            {
                // The final commit takes a while: cleanup must still be waiting when it ends.
                await Task.Delay(300);
                Record("commit");
                return result;
            },
            TestContext.Current.CancellationToken);
        await cleanup!;

        Assert.Equal(["signal", "wait", "note-kill", "kill", "commit", "remove"], Collapsed(_steps));
        Assert.True(outcome.Killed);
        Assert.Equal(137, outcome.ExitCode);
        Assert.Equal(["TERM", "KILL"], stage.Signals);
    }

    [Fact]
    public async Task A_stage_whose_processes_all_exit_within_the_grace_is_not_killed()
    {
        var stage = new RecordingStage(Record, exitsAfterPolls: 3);
        var killNoted = false;

        var outcome = await new StopSequence("USR1", TimeSpan.FromSeconds(30), _ => { }, () => killNoted = true).RunAsync(stage);

        Assert.False(outcome.Killed);
        Assert.False(killNoted);
        Assert.Equal(["USR1"], stage.Signals);
        Assert.Equal(0, outcome.ExitCode);
        Assert.Equal(["signal", "wait", "wait", "wait"], _steps);
    }

    [Fact]
    public async Task Cleanup_of_a_job_no_run_ever_leased_does_not_wait()
    {
        var free = await RunLease.WaitUntilReleasedAsync(_stateDir, 7, TimeSpan.FromSeconds(30), message => Record(message));

        Assert.True(free);
        Assert.Empty(_steps);
    }

    [Fact]
    public async Task Cleanup_gives_up_waiting_for_a_run_that_holds_its_lease_past_the_limit_and_says_so()
    {
        using var lease = await RunLease.HoldAsync(_stateDir, 8, TestContext.Current.CancellationToken);

        var free = await RunLease.WaitUntilReleasedAsync(_stateDir, 8, TimeSpan.FromMilliseconds(300), Record);

        Assert.False(free);
        Assert.Contains(_steps, line => line.StartsWith("WARNING: run of job 8 is still stopping", StringComparison.Ordinal));
    }
}

public sealed class SignalNoticeFilterTests
{
    private static string Filter(bool armed, params string[] chunks)
    {
        var filter = new SignalNoticeFilter();
        if (armed)
            filter.Arm();
        var output = new ArrayBufferWriter<byte>();
        foreach (var chunk in chunks)
            filter.Feed(Encoding.UTF8.GetBytes(chunk), output);
        filter.Flush(output);
        return Encoding.UTF8.GetString(output.WrittenSpan);
    }

    [Theory]
    [InlineData("Terminated\n")]
    [InlineData("Killed\n")]
    [InlineData("./slow-save.sh: line 31:    45 Terminated              sleep 0.2\n")]
    [InlineData("bash: line 5:    31 Killed                  bash < <(printf '%b' \"$encoded\")\n")]
    [InlineData("/builds/train.sh: line 3: 1234 User defined signal 1   python train.py\n")]
    [InlineData("Quit (core dumped)\n")]
    public void After_a_stop_bashs_notices_are_dropped(string notice)
    {
        Assert.Equal("saving\nsaved\n", Filter(armed: true, "saving\n", notice, "saved\n"));
    }

    [Fact]
    public void Before_a_stop_a_notice_is_the_jobs_own_news_and_passes()
    {
        Assert.Equal("Terminated\n", Filter(armed: false, "Terminated\n"));
    }

    [Theory]
    [InlineData("Terminated by the user at epoch 3\n")]
    [InlineData("Killed: 3 stragglers\n")]
    [InlineData("loss Terminated\n")]
    [InlineData("NotTerminated\n")]
    public void Lines_that_only_mention_a_signal_pass(string line)
    {
        Assert.Equal(line, Filter(armed: true, line));
    }

    [Fact]
    public void A_notice_split_across_chunks_is_still_dropped_and_everything_else_passes_byte_for_byte()
    {
        Assert.Equal("a\nb", Filter(armed: true, "a\nTermi", "nated\nb"));
    }

    [Fact]
    public void A_line_begun_before_the_stop_is_passed_whole()
    {
        var filter = new SignalNoticeFilter();
        var output = new ArrayBufferWriter<byte>();
        filter.Feed("progress 10%"u8, output);
        filter.Arm();
        filter.Feed(" Terminated\nTerminated\nend\n"u8, output);

        Assert.Equal("progress 10% Terminated\nend\n", Encoding.UTF8.GetString(output.WrittenSpan));
    }

    [Fact]
    public void A_long_line_is_not_held_back_waiting_for_its_end()
    {
        var filter = new SignalNoticeFilter();
        filter.Arm();
        var output = new ArrayBufferWriter<byte>();
        var longPartial = new string('x', 5000);

        filter.Feed(Encoding.UTF8.GetBytes(longPartial), output);

        Assert.Equal(longPartial, Encoding.UTF8.GetString(output.WrittenSpan));
    }
}
