using GpuExecutor.Protocol;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`cleanup`: removes what the job left, through <see cref="CleanupJob"/>.</summary>
public static class CleanupVerb
{
    public static async Task RunAsync(VerbContext context)
    {
        var job = JobIdentity.From(JobPayloadReader.Read(context.Environment));
        await new CleanupJob(context.Config, context.Adapters.Containers, context.Log).RunAsync(job);
    }
}
