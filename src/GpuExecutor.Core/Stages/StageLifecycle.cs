using GpuExecutor.Jobs;

namespace GpuExecutor.Stages;

/// <summary>
/// The order in which every stage of a job ends, stopped or not (issue 11): first the stage
/// itself, a stop's whole <see cref="StopSequence"/> included (signal, wait, SIGKILL); then what
/// needs the container still standing, such as the final checkpoint commit; and only then is
/// the job's <see cref="RunLease"/> released, which cleanup waits for before it removes the
/// container.
/// </summary>
public static class StageLifecycle
{
    public static async Task<TResult> RunAsync<TResult>(
        string stateDir,
        long jobId,
        Func<Task<StageResult>> stage,
        Func<StageResult, Task<TResult>> whileTheContainerStands,
        CancellationToken cancellationToken)
    {
        using var lease = await RunLease.HoldAsync(stateDir, jobId, cancellationToken);
        var result = await stage();
        return await whileTheContainerStands(result);
    }
}
