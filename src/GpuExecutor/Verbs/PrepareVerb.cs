using GpuExecutor.Protocol;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`prepare`: the job's containers, GPUs, datasets and checkpoint, through <see cref="PrepareJob"/>.</summary>
public static class PrepareVerb
{
    public static async Task RunAsync(VerbContext context)
    {
        var payload = JobPayloadReader.Read(context.Environment);
        context.Facts.Payload = payload;
        var adapters = context.Adapters;
        var workflow = new PrepareJob(context.Config, adapters.Containers, adapters.Gpus, adapters.Stores, adapters.AgentLauncher, context.Log, adapters.StreamLauncher, adapters.OpenGitLabMlflow, context.Facts, adapters.SamplerLauncher);
        await workflow.RunAsync(payload, context.Stop);
    }
}
