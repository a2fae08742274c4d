using GpuExecutor.Clocks;

namespace GpuExecutor.Stages;

/// <summary>The processes of one running stage, as a stop sees them.</summary>
public interface IStageProcesses
{
    /// <summary>Sends <paramref name="signal"/> (a name such as TERM, or KILL) to every process of the stage.</summary>
    Task SignalAsync(string signal);

    /// <summary>True once the stage has ended and none of its processes is left.</summary>
    Task<bool> AllExitedAsync();

    /// <summary>Waits until the stage ends or <paramref name="wait"/> passes, whichever is first.</summary>
    Task PauseAsync(TimeSpan wait);

    /// <summary>The stage's exit code once it has ended; a failure if it does not within <paramref name="wait"/>.</summary>
    Task<int> ExitCodeAsync(TimeSpan wait);
}

/// <summary>How a stop ended the stage: its exit code, and whether its processes had to be SIGKILLed.</summary>
public sealed record StopOutcome(int ExitCode, bool Killed);

/// <summary>
/// The one way a stage is stopped, whatever asked for it: a cancel, the job's timeout, the
/// runner's shutdown (all reach `run` as SIGTERM) or the job's approaching deadline.
///   1. the configured signal to every process of the stage;
///   2. a wait until all of them have exited, up to the grace period. The runner's script traps
///      TERM with `exit 1`, so its shell often ends at once while the trainer it started is still
///      writing its last checkpoint: the stage's reply alone is not the end;
///   3. SIGKILL for whatever is left, after <paramref name="beforeKill"/> has recorded that the
///      writer of the checkpoint directory was killed (its files may be torn).
/// Only after this does `run` ask for the final commit, and only after that may cleanup remove
/// the container (<see cref="GpuExecutor.Jobs.RunLease"/>).
/// </summary>
public sealed class StopSequence(string signal, TimeSpan grace, Action<string> log, Action? beforeKill = null)
{
    /// <summary>How often the wait asks whether the stage's processes are all gone.</summary>
    public static readonly TimeSpan SurvivorPollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>After SIGKILL the stage's exit code should come at once; past this we give up on it.</summary>
    public static readonly TimeSpan AfterKillWait = TimeSpan.FromSeconds(10);

    public async Task<StopOutcome> RunAsync(IStageProcesses stage)
    {
        await stage.SignalAsync(signal);

        var graceEnds = Monotonic.Now + grace;
        while (Monotonic.Now < graceEnds)
        {
            if (await stage.AllExitedAsync())
                return new StopOutcome(await stage.ExitCodeAsync(TimeSpan.Zero), Killed: false);
            var left = graceEnds - Monotonic.Now;
            await stage.PauseAsync(left < SurvivorPollInterval ? (left > TimeSpan.Zero ? left : TimeSpan.Zero) : SurvivorPollInterval);
        }

        log($"The stage's processes are still running after {grace.TotalSeconds:0} s: sending SIGKILL.");
        beforeKill?.Invoke();
        await stage.SignalAsync("KILL");
        return new StopOutcome(await stage.ExitCodeAsync(AfterKillWait), Killed: true);
    }
}
